"""List every Python distribution of an environment with its licence; fail on one outside the allow-list.

Run it with the interpreter of the environment to check: it reads that interpreter's installed metadata
(``importlib.metadata``) and needs nothing but the standard library, so it runs inside any of the project's
images as they are. ``python scripts/check_licences.py --help`` says how.

A script rather than a module of the project: an image holds only the packages its entrypoint imports, and
this file can be copied into an image, or fed to its interpreter on standard input, with no package along.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata

ALLOWED = frozenset(
    (
        # Permissive licences (SPDX identifiers).
        "MIT", "MIT-0", "MIT-CMU", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "Apache-2.0", "ISC", "Zlib",
        "Unlicense", "CC0-1.0", "BSL-1.0", "HPND", "PSF-2.0", "Python-2.0", "CNRI-Python", "ZPL-2.1",
        # "BSD": the classifier "BSD License", which does not say 2 or 3 clauses (both permissive).
        "BSD",
        # Weak, file-level copyleft: using the unmodified library is free (certifi, tqdm, orjson).
        "MPL-2.0",
    )
)  # fmt: skip
"""Licences any distribution may have. Not on it, so refused: GPL, AGPL, LGPL, SSPL, proprietary, unknown."""

BUSINESS_SOURCE = "BUSL-1.1"
"""The Business Source License 1.1 (alibi-detect since 0.12): allowed only where ``--allow-bsl NAME`` says so.
Not to be confused with ``BSL-1.0``, the Boost Software License (permissive)."""

REFUSED = frozenset(
    (
        BUSINESS_SOURCE, "SSPL-1.0", "Elastic-2.0",
        "GPL-2.0", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0", "GPL-3.0-only", "GPL-3.0-or-later",
        "AGPL-3.0", "AGPL-3.0-only", "AGPL-3.0-or-later", "LGPL-2.1", "LGPL-2.1-only", "LGPL-2.1-or-later",
        "LGPL-3.0", "LGPL-3.0-only", "LGPL-3.0-or-later",
    )
)  # fmt: skip
"""Identifiers recognised in a free-text ``License`` field, so that they are named, then refused."""

TEXT_ALIASES = {
    "mit": "MIT",
    "bsd": "BSD",
    "new bsd": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause",
    "3-clause bsd": "BSD-3-Clause",
    "bsd 2-clause": "BSD-2-Clause",
    "2-clause bsd": "BSD-2-Clause",
    "simplified bsd": "BSD-2-Clause",
    "apache": "Apache-2.0",
    "apache 2": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache software": "Apache-2.0",
    "apache software 2.0": "Apache-2.0",
    "https://www.apache.org/licenses/license-2.0": "Apache-2.0",
    "http://www.apache.org/licenses/license-2.0": "Apache-2.0",
    "isc": "ISC",
    "psf": "PSF-2.0",
    "python software foundation": "PSF-2.0",
    "mozilla public 2.0": "MPL-2.0",
    "business source 1.1": BUSINESS_SOURCE,
    "gplv3": "GPL-3.0",
    "gplv2": "GPL-2.0",
}
"""Free-text ``License`` fields seen on PyPI, normalised by :func:`normalise_text`, and what they mean."""

CLASSIFIERS = {
    "OSI Approved :: MIT License": "MIT",
    "OSI Approved :: MIT No Attribution License (MIT-0)": "MIT-0",
    "OSI Approved :: BSD License": "BSD",
    "OSI Approved :: Apache Software License": "Apache-2.0",
    "OSI Approved :: ISC License (ISCL)": "ISC",
    "OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "OSI Approved :: Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "OSI Approved :: zlib/libpng License": "Zlib",
    "OSI Approved :: Zope Public License": "ZPL-2.1",
    "OSI Approved :: GNU General Public License v2 (GPLv2)": "GPL-2.0",
    "OSI Approved :: GNU General Public License v3 (GPLv3)": "GPL-3.0",
    "OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.1-or-later",
    "OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0",
    "OSI Approved :: GNU Affero General Public License v3": "AGPL-3.0",
    "Other/Proprietary License": "LicenseRef-Proprietary",
}
"""``License ::`` classifiers (the part after it) and their SPDX identifiers; any other is shown as it is and
refused. The bare ``OSI Approved`` says too little (the GPL is OSI approved) and is ignored."""

UNSPECIFIC = {"OSI Approved", "DFSG approved"}

LICENCE_TEXTS = (
    ("GPL-3.0", ("gnu general public license", "version 3")),
    ("Apache-2.0", ("apache license", "version 2.0")),
    ("MIT", ("permission is hereby granted, free of charge, to any person obtaining a copy",)),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "neither the name")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
)
"""The last resort, for metadata that names no licence: the shipped licence file, by the phrases of its grant
(the first match wins, so a GPL text quoting other licences stays GPL)."""

Node = tuple  # ("id", name) | ("and", [nodes]) | ("or", [nodes])


@dataclass(frozen=True)
class Licence:
    """One installed distribution and the verdict on its licence.

    Attributes:
        name: Distribution name, as installed.
        version: Its version.
        licence: The licence as an SPDX-style expression, or the metadata's text when not recognised.
        source: Where it was read: ``License-Expression``, ``License``, ``classifiers``, ``licence file NAME``
            (the metadata names none) or ``none``.
        allowed: Whether the licence is acceptable here.
        note: Why it is refused, or which exception allowed it ("" when on the allow-list).
    """

    name: str
    version: str
    licence: str
    source: str
    allowed: bool
    note: str


def parse_expression(text: str) -> Node:
    """An SPDX licence expression (``MIT``, ``Apache-2.0 OR BSD-3-Clause``, ``(A AND B) OR C``) as a tree.

    Raises:
        ValueError: ``text`` is not an expression (free text such as ``Apache 2.0`` or ``Dual License``).
    """
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        if position >= len(tokens):
            raise ValueError(f"incomplete licence expression {text!r}")
        position += 1
        return tokens[position - 1]

    def operand() -> Node:
        token = take()
        if token == "(":
            node = disjunction()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {text!r}")
            return node
        if token.upper() in ("AND", "OR", "WITH", ")") or not re.fullmatch(r"[A-Za-z0-9.+:-]+", token):
            raise ValueError(f"not a licence identifier: {token!r} in {text!r}")
        if (peek() or "").upper() == "WITH":  # an exception adds permissions: the licence is what counts
            take()
            take()
        return ("id", token.removesuffix("+"))

    def sequence(operator: str, inner: Callable[[], Node]) -> Node:
        nodes = [inner()]
        while (peek() or "").upper() == operator.upper():
            take()
            nodes.append(inner())
        return nodes[0] if len(nodes) == 1 else (operator, nodes)

    def conjunction() -> Node:
        return sequence("and", operand)

    def disjunction() -> Node:
        return sequence("or", conjunction)

    tree = disjunction()
    if position != len(tokens):
        raise ValueError(f"not a licence expression: {text!r}")
    return tree


def identifiers(node: Node) -> list[str]:
    """Every licence identifier in an expression tree."""
    return [node[1]] if node[0] == "id" else [name for child in node[1] for name in identifiers(child)]


def render(node: Node, top: bool = True) -> str:
    """An expression tree as SPDX text."""
    if node[0] == "id":
        return str(node[1])
    text = f" {node[0].upper()} ".join(render(child, top=False) for child in node[1])
    return text if top else f"({text})"


def satisfied(node: Node, accepted: Iterable[str]) -> bool:
    """Whether an expression is acceptable when the identifiers ``accepted`` are: OR needs one, AND all."""
    names = {name.casefold() for name in accepted}
    if node[0] == "id":
        return str(node[1]).casefold() in names
    results = [satisfied(child, names) for child in node[1]]
    return any(results) if node[0] == "or" else all(results)


def normalise_text(text: str) -> str:
    """A free-text licence name, lower-cased, without "the", "license", "version" and punctuation."""
    text = text.strip().casefold().replace("licence", "license")
    if "://" in text:
        return text.rstrip("/").removesuffix(".txt").removesuffix(".html")
    text = re.sub(r"[,()]", " ", text)
    text = re.sub(r"\b(the|license|version)\b|\bv(?=\d)", " ", text)
    return " ".join(text.split())


def from_text(text: str) -> Node | None:
    """A short ``License`` field that names a licence, as a tree; ``None`` for anything else."""
    text = text.strip()
    if not text or "\n" in text or len(text) > 100:
        return None
    try:
        node = parse_expression(text)
    except ValueError:
        alias = TEXT_ALIASES.get(normalise_text(text))
        return ("id", alias) if alias else None
    known = {name.casefold() for name in ALLOWED | REFUSED}
    if all(name.casefold() in known for name in identifiers(node)):
        return node
    alias = TEXT_ALIASES.get(normalise_text(text))
    return ("id", alias) if alias else None


def licence_of(distribution: metadata.Distribution) -> tuple[Node | None, str]:
    """The licence a distribution declares, and where it says so (see :class:`Licence`)."""
    fields = distribution.metadata
    expression = fields.get("License-Expression")
    if expression:
        try:
            return parse_expression(expression), "License-Expression"
        except ValueError:
            return ("id", expression.strip()), "License-Expression"
    node = from_text(fields.get("License") or "")
    if node is not None:
        return node, "License"
    classifiers = [
        value.removeprefix("License :: ")
        for value in fields.get_all("Classifier") or []
        if value.startswith("License :: ") and value.removeprefix("License :: ") not in UNSPECIFIC
    ]
    if classifiers:
        # Several classifiers: all must be acceptable (they may mean a choice, or parts under each).
        names = list(dict.fromkeys(CLASSIFIERS.get(value, value) for value in classifiers))
        node = ("id", names[0]) if len(names) == 1 else ("and", [("id", name) for name in names])
        return node, "classifiers"
    return from_files(distribution)


def from_files(distribution: metadata.Distribution) -> tuple[Node | None, str]:
    """The licence recognised in the distribution's shipped licence file, when its metadata names none."""
    declared = distribution.metadata.get_all("License-File") or []
    candidates = [f"licenses/{name}" for name in declared] + list(declared)
    candidates += [
        str(path).split("/", 1)[1]
        for path in distribution.files or []
        if ".dist-info/" in str(path) and re.match(r"(LICEN[CS]E|COPYING)", path.name, re.IGNORECASE)
    ]
    for candidate in dict.fromkeys(candidates):
        text = " ".join((distribution.read_text(candidate) or "").casefold().split())
        for name, phrases in LICENCE_TEXTS:
            if text and all(phrase in text for phrase in phrases):
                return ("id", name), f"licence file {candidate}"
    return None, "none"


def judge(distribution: metadata.Distribution, allow_bsl: set[str]) -> Licence:
    """The verdict on one distribution's licence."""
    name, version = distribution.metadata["Name"], distribution.version
    node, source = licence_of(distribution)
    if node is None:
        return Licence(
            name, version, "unknown", source, False, "no licence in its metadata: check it by hand"
        )
    text = render(node)
    if satisfied(node, ALLOWED):
        return Licence(name, version, text, source, True, "")
    business = any(item.casefold() == BUSINESS_SOURCE.casefold() for item in identifiers(node))
    if business and canonical(name) in allow_bsl and satisfied(node, ALLOWED | {BUSINESS_SOURCE}):
        return Licence(name, version, text, source, True, "Business Source License allowed by --allow-bsl")
    hint = f"; --allow-bsl {name} accepts it where its terms are met" if business else ""
    return Licence(name, version, text, source, False, f"not on the allow-list{hint}")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Alibi_Detect`` is ``alibi-detect``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(paths: Sequence[str] | None) -> dict[str, metadata.Distribution]:
    """The distributions on ``paths`` (default: this interpreter's ``sys.path``), first one of each name."""
    found: dict[str, metadata.Distribution] = {}
    for distribution in metadata.distributions(**({"path": list(paths)} if paths else {})):
        name = distribution.metadata["Name"]
        if name:
            found.setdefault(canonical(name), distribution)
    return found


def closure(requirements: Sequence[str], found: dict[str, metadata.Distribution]) -> list[str]:
    """The names of ``requirements`` and of everything they require here, their extras and markers applied.

    Raises:
        SystemExit: The ``packaging`` library is missing, or a requirement is not installed.
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        except ImportError:
            raise SystemExit("--requires needs the packaging library (or pip); without it, check the whole "
                             "environment (no --requires)") from None  # fmt: skip
    seen: set[tuple[str, str]] = set()
    names: list[str] = []
    queue = [(Requirement(text), "") for text in requirements]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonical(requirement.name)
        if name not in found:
            raise SystemExit(f"{requirement} is required but {requirement.name} is not installed here")
        if name not in names:
            names.append(name)
        for wanted in ("", *sorted(requirement.extras)):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            queue += [(Requirement(text), wanted) for text in found[name].requires or []]
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    return argparse.ArgumentParser(
        prog="check_licences.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List every Python distribution installed in this interpreter's environment with its "
        "licence (read from the installed metadata: License-Expression, else the License field, else the "
        "License classifiers) and exit 1 when one is outside the allow-list. Standard library only: run it "
        "with the interpreter of the environment to check, e.g. in a built image.",
        epilog="""examples:
  # inside an image, with the image's own Python (it checks that Python's site-packages):
  python check_licences.py                          # predictor, transformer, explainer, trainer, detector-oss
  python check_licences.py --allow-bsl alibi-detect # the default detector image (alibi-detect, BSL 1.1)
  python - --allow-bsl alibi-detect < scripts/check_licences.py  # the script fed on standard input
  # from the repository, one image's dependencies as the dev environment resolves them (needs packaging):
  .venv/bin/python scripts/check_licences.py --requires 'housing-kserve[detector-oss]'

allowed: """
        + ", ".join(sorted(ALLOWED, key=str.casefold))
        + f"; {BUSINESS_SOURCE} only with --allow-bsl NAME."
        + "\nexit status: 0 all allowed, 1 one or more refused.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Check the environment; 0 when every licence is allowed, 1 otherwise."""
    parser = build_parser()
    parser.add_argument(
        "--allow-bsl",
        action="append",
        default=[],
        metavar="NAME",
        help="accept the Business Source License 1.1 for this distribution (repeatable): alibi-detect in the "
        "default detector image, whose README states it",
    )
    parser.add_argument(
        "--requires",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="check only what this requirement pulls in (e.g. 'housing-kserve[detector]'; repeatable), not "
        "every installed distribution: an image's dependencies, judged in a bigger environment",
    )
    parser.add_argument(
        "--path",
        action="append",
        metavar="DIR",
        help="look for distributions in DIR (repeatable) instead of this interpreter's sys.path, e.g. an "
        "image's site-packages mounted here",
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    args = parser.parse_args(argv)
    found = installed(args.path)
    names = closure(args.requires, found) if args.requires else sorted(found)
    allow_bsl = {canonical(name) for name in args.allow_bsl}
    results = sorted((judge(found[name], allow_bsl) for name in names), key=lambda item: canonical(item.name))
    refused = [item for item in results if not item.allowed]
    if args.json:
        print(json.dumps([asdict(item) for item in results], indent=2))
    else:
        width = max((len(f"{item.name} {item.version}") for item in results), default=0)
        for item in results:
            verdict = "ok" if item.allowed and not item.note else ("ok: " if item.allowed else "REFUSED: ")
            line = f"{item.name + ' ' + item.version:<{width}}  {item.licence} [{item.source}]  {verdict}"
            print(line + (item.note if verdict != "ok" else ""))
        print(f"{len(results)} distributions, {len(refused)} refused", file=sys.stderr)
    unused = allow_bsl - {canonical(item.name) for item in results}
    if unused:
        print(f"note: --allow-bsl {', '.join(sorted(unused))}: not installed here", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
