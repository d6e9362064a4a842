"""Every `docs/....md §x` the code, configs, tests and docs cite names a file and a section that exist."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE_NAMES = ("SPINENET", "NASFPN", "BLITZNET", "PEERS")
SECTION = r"§\s*\d+(?:\.\d+)*(?:\s*[-–]\s*\d+(?:\.\d+)*)?"
# a docs path, then optionally sections: "docs/reference/X.md §1.2-1.4, §2 and §3.1"
CITATION = re.compile(rf"(docs/[\w./-]+?\.md)((?:\s*(?:,|and)?\s*{SECTION})*)")
BARE_REFERENCE = re.compile(rf"(?<![/\w])(?:{'|'.join(REFERENCE_NAMES)})\.md")
HEADING = re.compile(r"^#+\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def _sources() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for folder in ("scaledet", "tests", "benchmarks", "tools"):
        files += [p for p in sorted((REPO / folder).rglob("*")) if p.suffix in (".py", ".yaml", ".md")]
    return [p for p in files if p.is_file() and p.resolve() != Path(__file__).resolve()]


def _sections(doc: Path) -> set[str]:
    return set(HEADING.findall(doc.read_text()))


def _where(path: Path, text: str, index: int) -> str:
    return f"{path.relative_to(REPO)}:{text.count(chr(10), 0, index) + 1}"


def test_every_cited_file_and_section_exists():
    problems, cited = [], 0
    for path in _sources():
        text = path.read_text()
        covered = []
        for match in CITATION.finditer(text):
            doc = REPO / match.group(1)
            covered.append(match.span())
            if not doc.is_file():
                problems.append(f"{_where(path, text, match.start())}: {match.group(1)} does not exist")
                continue
            known = _sections(doc)
            for ref in re.findall(SECTION, match.group(2)):
                cited += 1
                for section in re.split(r"[-–]", ref.lstrip("§")):
                    if section.strip().rstrip(".") not in known:
                        problems.append(f"{_where(path, text, match.start())}: {match.group(1)} has no §{section.strip()}")
        for match in re.finditer("§", text):
            inside = any(start <= match.start() < end for start, end in covered)
            if not inside and not text[max(0, match.start() - 6):match.start()].endswith("paper "):
                problems.append(f"{_where(path, text, match.start())}: a § that names no docs/... .md file")
        for match in BARE_REFERENCE.finditer(text):
            problems.append(f"{_where(path, text, match.start())}: cite {match.group(0)} as docs/reference/{match.group(0)}")
    assert not problems, "\n".join(problems)
    assert cited >= 30  # the scan does see the code's citations


def test_the_checker_catches_a_wrong_section_and_a_bare_file(tmp_path):
    text = "see docs/reference/SPINENET.md §1.4-1.99 and NASFPN.md §2"
    match = CITATION.search(text)
    refs = re.findall(SECTION, match.group(2))
    assert refs == ["§1.4-1.99"]
    known = _sections(REPO / "docs/reference/SPINENET.md")
    assert "1.4" in known and "1.99" not in known
    assert [m.group(0) for m in BARE_REFERENCE.finditer(text)] == ["NASFPN.md"]
