"""Parse-check every T-SQL statement under sql/ with sqlfluff's tsql dialect.

Run through sql/check.sh, which installs the pinned sqlfluff. A file is cut into units:
  - sql/queries/*.sql into its `-- name: <snake_case>` blocks (what the daemon sends, one batch each);
  - any other .sql file into its GO-separated batches (what sqlcmd and the daemon send).
Each unit is parsed on its own, so an error names its block or batch and line. A unit that uses
syntax the parser does not know is handled by an explicit rule below, never silently:
  - SUBSTITUTE rules rewrite the unknown construct into one the parser knows, so the rest of the
    statement is still checked;
  - SKIP rules leave the unit unparsed; every skipped unit is listed in the output.
Anything else that fails to parse fails the check (exit 1). Rules that no longer match anything
are reported, so the lists stay true.

For query files it also checks that block names are unique snake_case and that each block's
parameters run @P1..@Pn without gaps (tiberius binds them by position).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sqlfluff.core import FluffConfig, Linter

# Constructs sqlfluff 4.5.0's tsql dialect cannot parse, and what we do about each.
# (pattern over the unit's code with comments and string literals blanked, reason, replacement)
SUBSTITUTE = [
    (
        re.compile(r"\$(node_id|edge_id|from_id|to_id)\b", re.IGNORECASE),
        "SQL Graph pseudo-columns ($node_id, $from_id, $to_id) are unknown to the tsql dialect; "
        "checked as the bracketed identifiers [$node_id] etc.",
        r"[$\1]",
    ),
]
SKIP = [
    (
        re.compile(r"\bCREATE\s+SPATIAL\s+INDEX\b", re.IGNORECASE),
        "CREATE SPATIAL INDEX (USING GEOMETRY_AUTO_GRID WITH (BOUNDING_BOX = ...)) is not in the "
        "tsql dialect",
    ),
    (
        re.compile(r"\bMATCH\s*\(", re.IGNORECASE),
        "the SQL Graph MATCH predicate (n1-(e)->n2) is not in the tsql dialect",
    ),
    (
        re.compile(r"\bCREATE\s+EXTERNAL\s+MODEL\b", re.IGNORECASE),
        "CREATE EXTERNAL MODEL (SQL Server 2025) is not in the tsql dialect",
    ),
    (
        re.compile(r"\bON\s+(DATABASE\s+SCOPED\s+CREDENTIAL|EXTERNAL\s+MODEL)\s*::", re.IGNORECASE),
        "GRANT ... ON DATABASE SCOPED CREDENTIAL::name / EXTERNAL MODEL::name is not in the tsql dialect",
    ),
]

NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$")
GO_LINE = re.compile(r"^\s*GO\s*$", re.IGNORECASE)
PARAM = re.compile(r"@P(\d+)\b")
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class Unit:
    label: str
    line: int  # 1-based line of the unit's first line in its file
    text: str


@dataclass
class FileReport:
    path: Path
    parsed: int = 0
    statements: int = 0
    substituted: list[tuple[Unit, str]] = field(default_factory=list)
    skipped: list[tuple[Unit, str]] = field(default_factory=list)
    failed: list[tuple[Unit, str]] = field(default_factory=list)


def blank_comments_and_strings(sql: str) -> str:
    """The code with comments and string literals replaced by spaces (newlines kept), so that a
    rule matches code only, never a word in a comment or a string."""
    out = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", sql[i:j]))
            i = j
        elif c == "'":
            j = i + 1
            while j < n:
                if sql[j] == "'" and sql.startswith("''", j):
                    j += 2
                elif sql[j] == "'":
                    j += 1
                    break
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", sql[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def has_code(sql: str) -> bool:
    return bool(blank_comments_and_strings(sql).strip())


DESCRIBE = [
    re.compile(
        r"\bCREATE\s+(?:UNIQUE\s+)?(?:CLUSTERED\s+|NONCLUSTERED\s+)?(?:SPATIAL\s+)?"
        r"(?:TABLE|INDEX|SCHEMA|VIEW|PROCEDURE|FUNCTION)\s+[\w.#\[\]$]+(?:\s+ON\s+[\w.\[\]]+)?",
        re.IGNORECASE,
    ),
    re.compile(r"\bEXEC\s*\(\s*N?'[^']*'", re.IGNORECASE),
    re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[\w.\[\]]+", re.IGNORECASE),
    re.compile(r"\bEXEC(?:UTE)?\s+(?:@\w+\s*=\s*)?[\w.]+", re.IGNORECASE),
]


def describe(sql: str) -> str:
    """What a batch does, for messages: its first CREATE, else its first write or EXEC, else its
    first line of code."""
    code = blank_comments_and_strings(sql)
    for pattern in DESCRIBE:
        m = pattern.search(code)
        if m:
            # EXEC (N'...') is inside a string, blanked in `code`: take the text from `sql`.
            return " ".join(sql[m.start() : m.end()].split())[:90]
    for raw, stripped in zip(sql.splitlines(), code.splitlines()):
        if stripped.strip():
            return raw.strip()[:90]
    return ""


def split_named_blocks(path: Path, text: str, problems: list[str]) -> list[Unit]:
    units: list[Unit] = []
    name, start, body = None, 0, []
    seen: dict[str, int] = {}
    lines = text.splitlines(keepends=True)
    for no, line in enumerate(lines, 1):
        m = NAME_LINE.match(line.strip())
        if m:
            if name is not None:
                units.append(Unit(name, start, "".join(body)))
            elif has_code("".join(body)):
                problems.append(f"{path}:1: statements before the first `-- name:` block")
            name, start, body = m.group(1), no, [line]
            if not SNAKE.match(name):
                problems.append(f"{path}:{no}: block name {name!r} is not snake_case")
            if name in seen:
                problems.append(f"{path}:{no}: block name {name!r} already used at line {seen[name]}")
            seen[name] = no
        else:
            if GO_LINE.match(line) and name is not None:
                problems.append(f"{path}:{no}: GO inside block {name!r}: a block is one batch")
            body.append(line)
    if name is not None:
        units.append(Unit(name, start, "".join(body)))
    for u in units:
        if not has_code(u.text):
            problems.append(f"{path}:{u.line}: block {u.label!r} has no statement")
        used = sorted({int(p) for p in PARAM.findall(blank_comments_and_strings(u.text))})
        if used and used != list(range(1, used[-1] + 1)):
            missing = sorted(set(range(1, used[-1] + 1)) - set(used))
            problems.append(
                f"{path}:{u.line}: block {u.label!r} skips parameter(s) "
                + ", ".join(f"@P{m}" for m in missing)
                + " (tiberius binds @P1..@Pn by position)"
            )
    return units


def split_batches(text: str) -> list[Unit]:
    units: list[Unit] = []
    start, body = 1, []
    for no, line in enumerate(text.splitlines(keepends=True), 1):
        if GO_LINE.match(line):
            units.append(Unit("", start, "".join(body)))
            start, body = no + 1, []
        else:
            body.append(line)
    units.append(Unit("", start, "".join(body)))
    units = [u for u in units if has_code(u.text)]
    for i, u in enumerate(units, 1):
        u.label = f"batch {i} ({describe(u.text)})"
    return units


def statement_count(tree) -> int:
    return sum(1 for _ in tree.recursive_crawl("statement", recurse_into=False)) if tree else 0


def check_file(path: Path, linter: Linter, problems: list[str], used_rules: set[str]) -> FileReport:
    report = FileReport(path)
    text = path.read_text(encoding="utf-8")
    is_queries = path.parent.name == "queries"
    units = split_named_blocks(path, text, problems) if is_queries else split_batches(text)
    for unit in units:
        code = blank_comments_and_strings(unit.text)
        skip = next(((p, why) for p, why in SKIP if p.search(code)), None)
        if skip:
            used_rules.add(skip[0].pattern)
            report.skipped.append((unit, skip[1]))
            continue
        sql = unit.text
        for pattern, why, replacement in SUBSTITUTE:
            if pattern.search(code):
                used_rules.add(pattern.pattern)
                # Substitute in code positions only: blank-out keeps offsets, so rebuild by spans.
                pieces, last = [], 0
                for m in pattern.finditer(code):
                    pieces.append(sql[last : m.start()])
                    pieces.append(m.expand(replacement))
                    last = m.end()
                pieces.append(sql[last:])
                sql = "".join(pieces)
                code = blank_comments_and_strings(sql)
                report.substituted.append((unit, why))
        parsed = linter.parse_string(sql if sql.endswith("\n") else sql + "\n", fname=str(path))
        unparsable = list(parsed.tree.recursive_crawl("unparsable")) if parsed.tree else []
        if parsed.violations or unparsable or parsed.tree is None:
            details = []
            for v in parsed.violations:
                line_no = v.line_no + unit.line - 1 if v.line_no else unit.line
                # desc() starts with the position inside the unit; the file line replaces it.
                desc = re.sub(r"^Line \d+, Position \d+: ", "", v.desc())
                details.append(f"line {line_no}, column {v.line_pos}: {desc}")
            if not details:
                details = [f"unparsable: {u.raw[:120]!r}" for u in unparsable] or ["no parse tree"]
            report.failed.append((unit, "\n      ".join(details)))
            continue
        report.parsed += 1
        report.statements += statement_count(parsed.tree)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the sql/ folder")
    ap.add_argument("--list", action="store_true", help="also list every unit with its parameter count")
    args = ap.parse_args()

    files = sorted(p for p in args.root.rglob("*.sql") if ".venv" not in p.parts)
    if not files:
        print(f"no .sql files under {args.root}", file=sys.stderr)
        return 1
    # large_file_skip_byte_limit 0: never skip a file for its size.
    config = FluffConfig(overrides={"dialect": "tsql", "large_file_skip_byte_limit": 0})
    linter = Linter(config=config)

    problems: list[str] = []
    used_rules: set[str] = set()
    totals = dict(units=0, parsed=0, statements=0, skipped=0, failed=0)
    for path in files:
        r = check_file(path, linter, problems, used_rules)
        rel = path.relative_to(args.root.parent) if args.root.parent in path.parents else path
        n_units = r.parsed + len(r.skipped) + len(r.failed)
        print(
            f"{rel}: {r.parsed}/{n_units} units parsed ({r.statements} statements), "
            f"{len(r.skipped)} skipped, {len(r.failed)} failed"
            + (f", {len(r.substituted)} checked with substitutions" if r.substituted else "")
        )
        for unit, why in r.substituted:
            print(f"  substituted {unit.label} (line {unit.line}): {why}")
        for unit, why in r.skipped:
            print(f"  SKIPPED {unit.label} (line {unit.line}): {why}")
        for unit, why in r.failed:
            print(f"  FAILED {unit.label} (line {unit.line}):\n      {why}")
        if args.list and path.parent.name == "queries":
            for unit in split_named_blocks(path, path.read_text(encoding="utf-8"), []):
                n = len(set(PARAM.findall(blank_comments_and_strings(unit.text))))
                print(f"    {unit.label}: {n} parameter(s)")
        totals["units"] += n_units
        totals["parsed"] += r.parsed
        totals["statements"] += r.statements
        totals["skipped"] += len(r.skipped)
        totals["failed"] += len(r.failed)

    for pattern, why, *_ in SUBSTITUTE + SKIP:
        if pattern.pattern not in used_rules:
            print(f"note: rule no longer needed by any file (remove it?): {why}")
    for p in problems:
        print(f"error: {p}")
    print(
        f"total: {totals['parsed']}/{totals['units']} units parsed ({totals['statements']} statements), "
        f"{totals['skipped']} skipped by rule, {totals['failed']} failed, {len(problems)} other errors"
    )
    return 1 if totals["failed"] or problems else 0


if __name__ == "__main__":
    sys.exit(main())
