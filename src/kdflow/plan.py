"""The experiment's structure as pure functions of the validated config: the chain, the edges,
what each trained model is (role, method) and which model it learns from.

    chain(cfg)            # ["teacher", "assistant", "student"]
    edges(cfg)            # every distillation edge: the assistant chain, then kd and takd
    teacher_of(cfg, m)    # None for the teacher; the previous chain member for an assistant

A distillation edge `teacher -> student` is one kind of job whatever the roles: assistant
distillation and student distillation differ only in the names on the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

SEP = "__"  # edge names are "<teacher>__<student>"; model names cannot contain it (schema)


@dataclass(frozen=True)
class Edge:
    teacher: str
    student: str

    @property
    def name(self) -> str:
        return f"{self.teacher}{SEP}{self.student}"


def chain(cfg: dict) -> list[str]:
    return [cfg["teacher"], *cfg["assistants"], cfg["student"]]


def edges(cfg: dict) -> list[Edge]:
    """Assistant chain edges, the kd edge (teacher -> student) and, with assistants, the takd edge."""
    c = chain(cfg)
    out = [Edge(a, b) for a, b in zip(c[:-2], c[1:-1])]  # teacher -> ... -> last assistant
    out.append(Edge(cfg["teacher"], cfg["student"]))
    if cfg["assistants"]:
        out.append(Edge(cfg["assistants"][-1], cfg["student"]))
    return out


def teacher_of(cfg: dict, model: str) -> str | None:
    """The model a non-student chain member is distilled from (None: trained from labels)."""
    c = chain(cfg)[:-1]
    i = c.index(model)
    return c[i - 1] if i else None


def role(cfg: dict, model: str) -> str:
    if model == cfg["teacher"]:
        return "teacher"
    return "student" if model == cfg["student"] else "assistant"


def method(cfg: dict, teacher: str | None, student: str) -> str:
    """scratch (no teacher), kd (from the teacher itself) or takd (through assistants)."""
    if teacher is None:
        return "scratch"
    if student == cfg["student"] and teacher != cfg["teacher"]:
        return "takd"
    return "kd"
