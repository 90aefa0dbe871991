"""A class: a short code, the class experiment (a sweep grid), a question with the students'
guesses, and which student took which cell. Persisted as one JSON file per class under the run
store's directory (``<runs>/classes/CODE.json``), so a class survives a server restart.

Every change is a read-modify-write under an exclusive ``flock`` on ``CODE.lock`` (each call
opens its own descriptor, so threads of one process exclude each other as well as processes),
and the file is replaced atomically, so readers never see half a file and no update is lost.

Results are not stored here: a cell's result is the run store's newest finished run with the
cell config's run key, whoever trained it. Students appear only as owner ids, never on a board.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import io
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainConfig
from .sweeps import Cell, CellResult, Claim, Grid, GridError, grid_csv, next_cell

log = logging.getLogger(__name__)

# No letters that read as digits or as each other on a projector (B/8, G/6, I/1, L, O/0, Q,
# S/5, Z/2, U/V): 17**5 = 1.4 million codes.
CODE_ALPHABET = "ACDEFHJKMNPRTVWXY"
CODE_LENGTH = 5
_CODE = re.compile(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")
FORMAT = "dropout-demo-class"
MAX_QUESTION = 200
MAX_CHOICES = 12
MAX_CHOICE = 40
DEFAULT_QUESTION = "Which p will give the lowest test loss?"


class ClassError(ValueError):
    """A bad code, a missing class or an invalid change; the message is for users."""


def normal_code(text: str) -> str:
    """``" ackdf "`` -> ``"ACKDF"``; raises ClassError when it can't be a class code."""
    code = str(text or "").strip().upper()
    if not _CODE.fullmatch(code):
        raise ClassError(
            f"{text!r} is not a class code: codes are {CODE_LENGTH} letters, e.g. "
            f"{CODE_ALPHABET[:CODE_LENGTH]}."
        )
    return code


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def p_choices(grid: Grid) -> tuple[str, ...]:
    """The grid's dropout rates as answer choices: ``("p = 0", "p = 0.1", ...)``."""
    return tuple(f"p = {p:g}" for p in grid.ps)


def _grid_dict(grid: Grid) -> dict[str, Any]:
    return {
        "ps": list(grid.ps),
        "seeds": list(grid.seeds),
        "sizes": list(grid.sizes),
        "base": grid.base.to_dict(),
    }


def _grid_from(d: Mapping[str, Any]) -> Grid:
    return Grid(
        ps=tuple(d["ps"]),
        seeds=tuple(d["seeds"]),
        sizes=tuple(d.get("sizes") or ()),
        base=TrainConfig.from_dict(dict(d["base"])),
    )


@dataclass(frozen=True)
class ClassRoom:
    """One class as stored. ``claims``: cell index -> the student who took it and when;
    ``guesses``: student -> their choice (one per student)."""

    code: str
    grid: Grid
    teacher: str
    created: float
    question: str = ""
    choices: tuple[str, ...] = ()
    guesses: Mapping[str, str] = field(default_factory=dict)
    claims: Mapping[int, Claim] = field(default_factory=dict)
    version: int = 0

    def cells(self) -> list[Cell]:
        return _cells(self.grid)

    def guess_counts(self) -> Counter[str]:
        """Guesses per choice (choices nobody picked are absent)."""
        return Counter(g for g in self.guesses.values() if g in self.choices)

    def cell_of(self, student: str) -> int | None:
        """The index of the student's newest claim, or None."""
        mine = [(c.at, i) for i, c in self.claims.items() if c.student == student]
        return max(mine)[1] if mine else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "code": self.code,
            "grid": _grid_dict(self.grid),
            "teacher": self.teacher,
            "created": self.created,
            "question": self.question,
            "choices": list(self.choices),
            "guesses": dict(self.guesses),
            "claims": {str(i): [c.student, c.at] for i, c in sorted(self.claims.items())},
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassRoom:
        if d.get("format") != FORMAT:
            raise ClassError("not a class file")
        return cls(
            code=normal_code(d["code"]),
            grid=_grid_from(d["grid"]),
            teacher=str(d["teacher"]),
            created=float(d["created"]),
            question=str(d.get("question", "")),
            choices=tuple(str(c) for c in d.get("choices", ())),
            guesses={str(k): str(v) for k, v in dict(d.get("guesses", {})).items()},
            claims={int(i): Claim(str(s), float(at)) for i, (s, at) in d.get("claims", {}).items()},
            version=int(d.get("version", 0)),
        )


@functools.lru_cache(maxsize=64)
def _cells(grid: Grid) -> list[Cell]:
    return grid.cells()


def checked_question(question: str, choices: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """The question and its choices trimmed and checked; raises ClassError with the reason."""
    question = str(question or "").strip()
    cleaned: list[str] = []
    for c in choices:
        c = str(c).strip()
        if c and c not in cleaned:
            cleaned.append(c)
    if len(question) > MAX_QUESTION:
        raise ClassError(f"The question is too long (at most {MAX_QUESTION} characters).")
    if question and len(cleaned) < 2:
        raise ClassError("A question needs at least two different choices.")
    if len(cleaned) > MAX_CHOICES or any(len(c) > MAX_CHOICE for c in cleaned):
        raise ClassError(f"At most {MAX_CHOICES} choices of at most {MAX_CHOICE} characters.")
    return question, tuple(cleaned) if question else ()


class Classes:
    """The classes of one server (or several sharing a directory); safe from any thread."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        if root is None:
            from .runs import RunStore

            root = RunStore().root / "classes"
        self.root = Path(root)

    def _path(self, code: str) -> Path:
        return self.root / f"{code}.json"

    @contextlib.contextmanager
    def _locked(self, code: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f"{code}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read(self, code: str) -> ClassRoom | None:
        try:
            text = self._path(code).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return ClassRoom.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, ConfigError, GridError) as exc:
            log.warning("class file %s is damaged: %s", self._path(code), exc)
            raise ClassError(f"Class {code} can't be read (its file is damaged).") from None

    def _write(self, room: ClassRoom) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{room.code}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(room.to_dict(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(room.code))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ---------------------------------------------------------------- public
    def create(
        self,
        teacher: str,
        grid: Grid,
        question: str = "",
        choices: Iterable[str] = (),
        now: float | None = None,
    ) -> ClassRoom:
        question, choices = checked_question(question, choices)
        for _ in range(100):
            code = new_code()
            with self._locked(code):
                if self._path(code).exists():
                    continue
                room = ClassRoom(
                    code=code,
                    grid=grid,
                    teacher=teacher,
                    created=time.time() if now is None else now,
                    question=question,
                    choices=choices,
                )
                self._write(room)
                return room
        raise ClassError("No free class code found; try again.")

    def get(self, code: str) -> ClassRoom:
        code = normal_code(code)
        room = self._read(code)
        if room is None:
            raise ClassError(f"There is no class {code}: check the code with your teacher.")
        return room

    def exists(self, code: str) -> bool:
        try:
            return self._path(normal_code(code)).exists()
        except ClassError:
            return False

    def update(self, code: str, change: Callable[[ClassRoom], ClassRoom]) -> ClassRoom:
        """Apply ``change`` to the class as stored now, under the lock; returns the result."""
        code = normal_code(code)
        with self._locked(code):
            room = self._read(code)
            if room is None:
                raise ClassError(f"There is no class {code}.")
            new = change(room)
            if new is not room:
                new = replace(new, version=room.version + 1)
                self._write(new)
            return new

    def guess(self, code: str, student: str, choice: str) -> ClassRoom:
        """Record (or replace) the student's one guess."""

        def change(room: ClassRoom) -> ClassRoom:
            if choice not in room.choices:
                raise ClassError(f"{choice!r} is not one of the choices.")
            if room.guesses.get(student) == choice:
                return room
            return replace(room, guesses={**room.guesses, student: choice})

        return self.update(code, change)

    def set_question(self, code: str, question: str, choices: Iterable[str]) -> ClassRoom:
        """A new question (or none: empty text); earlier guesses are dropped."""
        question, choices = checked_question(question, choices)
        return self.update(
            code, lambda room: replace(room, question=question, choices=choices, guesses={})
        )

    def set_grid(self, code: str, grid: Grid) -> ClassRoom:
        """A new class experiment; claims of the old grid's cells are dropped."""
        return self.update(
            code, lambda room: room if room.grid == grid else replace(room, grid=grid, claims={})
        )

    def claim(
        self,
        code: str,
        student: str,
        finished: Collection[int] = (),
        now: float | None = None,
    ) -> tuple[ClassRoom, Cell]:
        """The cell the student should run now (``sweeps.next_cell``), recorded as theirs when
        nobody had claimed it. ``finished``: indices whose result already exists."""
        picked: list[Cell] = []

        def change(room: ClassRoom) -> ClassRoom:
            cell = next_cell(room.cells(), room.claims, finished, student)
            assert cell is not None  # a grid has at least one cell
            picked.append(cell)
            if cell.index in room.claims:
                return room
            at = time.time() if now is None else now
            return replace(room, claims={**room.claims, cell.index: Claim(student, at)})

        room = self.update(code, change)
        return room, picked[-1]

    def csv(self, room: ClassRoom, results: Mapping[int, CellResult]) -> str:
        """One row per cell with its result; status done / claimed / free (no student ids)."""
        statuses = {
            c.index: "done"
            if c.index in results
            else ("claimed" if c.index in room.claims else "free")
            for c in room.cells()
        }
        return grid_csv(room.cells(), results, statuses)


def guesses_csv(room: ClassRoom) -> str:
    """The question's choices with how many students picked each (no student ids)."""
    counts = room.guess_counts()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["question", "choice", "students"])
    for choice in room.choices:
        writer.writerow([room.question, choice, counts.get(choice, 0)])
    return out.getvalue()


# ---------------------------------------------------------------- results of cells
@functools.lru_cache(maxsize=4096)
def _key(config: TrainConfig) -> str | None:
    from .jobs import run_key

    try:
        return run_key(config)
    except ValueError:  # a device this machine does not have
        return None


def cell_key(cell: Cell) -> str | None:
    """The run identity of the cell's config on this machine (None if it can't run here)."""
    return _key(cell.config)


def cell_results(
    cells: Iterable[Cell], store: Any, live: Iterable[Any] = ()
) -> dict[int, CellResult]:
    """Finished cells' results: the run store's newest finished run with each cell's run key
    (one listing for all cells), and ``live`` rows (``JobSnapshot``-like: key, status,
    metrics) that are done but not saved yet."""
    by_key = {k: c.index for c in cells if (k := cell_key(c)) is not None}
    out: dict[int, CellResult] = {}
    for row in live:
        index = by_key.get(getattr(row, "key", None))
        if index is not None and row.status == "done" and row.metrics:
            out[index] = CellResult.from_metrics(row.metrics)
    if store is not None and len(out) < len(by_key):
        try:
            records = store.list()  # newest first
        except Exception:  # an unreadable store: no cached results, never an error
            log.warning("run store listing failed", exc_info=True)
            records = []
        for record in records:
            index = by_key.get(record.key)
            fresh = index is not None and index not in out
            if fresh and record.status == "done" and record.metrics:
                out[index] = CellResult.from_metrics(record.metrics)
    return out
