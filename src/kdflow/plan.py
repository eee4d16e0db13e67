"""The experiment's structure as pure functions of the validated config: pairs, methods, and the
models each seed trains.

    pairs(cfg)             # [Pair(("big", "small")), Pair(("big", "mid", "small"))]
    methods(cfg)           # [MethodSpec(name="kd", method="kd", params={}, search={}), ...]
    lineages(cfg)          # every distilled model: "big__small", "big__mid", "big__mid__small"
    scratch_models(cfg)    # trained from labels: every pair's teacher and student
    snapshots(cfg)         # early-stopped teachers: {"big_e20": ("big", 20)}

A distilled model is named by its lineage, the chain of models it was distilled through
("big__mid__small": small distilled from mid, itself distilled from big), and the method used on
every edge of that chain. A model distilled along the same chain by the same method is trained once
however many pairs mention it. Assistant distillation and student distillation are the same job:
an edge `teacher -> student` is an edge whatever the roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdflow.registry import GEN_METHODS, METHODS

SEP = "__"  # lineages are names joined by SEP; model names cannot contain it (schema)
ARROW = " → "


@dataclass(frozen=True)
class Pair:
    chain: tuple[str, ...]  # teacher, assistants..., student

    @property
    def lineage(self) -> str:
        return SEP.join(self.chain)

    @property
    def label(self) -> str:
        return ARROW.join(self.chain)


@dataclass(frozen=True)
class MethodSpec:
    """One row of the experiment: a registry method under a row name, with its overrides."""

    name: str  # the row label, used in paths
    method: str  # the kdflow.methods registry name
    params: dict = field(default_factory=dict)  # fixed values (not tuned)
    search: dict = field(default_factory=dict)  # tuned value -> {low, high}
    pairs: tuple[int, ...] | None = None  # the pairs (indices) it distils; None: every pair


def pairs(cfg: dict) -> list[Pair]:
    return [Pair((p["teacher"], *p.get("assistants", []), p["student"])) for p in cfg["pairs"]]


def method_spec(entry: str | dict) -> MethodSpec:
    """A `methods` entry as written (a name, or {method, name, params, search})."""
    if isinstance(entry, str):
        return MethodSpec(entry, entry)
    only = entry.get("pairs")
    return MethodSpec(
        entry.get("name", entry["method"]),
        entry["method"],
        entry.get("params", {}),
        entry.get("search", {}),
        tuple(only) if only is not None else None,
    )


def methods(cfg: dict) -> list[MethodSpec]:
    return [method_spec(e) for e in cfg["methods"]]


def method_by_name(cfg: dict, name: str) -> MethodSpec:
    return next(m for m in methods(cfg) if m.name == name)


def method_pairs(cfg: dict, spec: MethodSpec) -> list[Pair]:
    """The pairs a method row distils: all, or those its entry names."""
    every = pairs(cfg)
    return every if spec.pairs is None else [every[i] for i in spec.pairs]


def lineages(cfg: dict, spec: MethodSpec | None = None) -> list[str]:
    """Every distilled model's lineage (of the pairs `spec` distils), chain prefixes first, each once."""
    out: dict[str, None] = {}
    for p in pairs(cfg) if spec is None else method_pairs(cfg, spec):
        for k in range(2, len(p.chain) + 1):
            out[SEP.join(p.chain[:k])] = None
    return list(out)


def scratch_models(cfg: dict) -> list[str]:
    """Models trained from labels: every pair's teacher, and its student (the scratch baseline),
    and the models that snapshot teachers are taken from. A snapshot is one of them (the `train/`
    tree) though no job trains it: its model's job kept its weights (see `trained_models`)."""
    names = [n for p in pairs(cfg) for n in (p.chain[0], p.chain[-1])]
    names += [m for e in ensembles(cfg) if e in names for m in cfg["models"][e]["ensemble"]]
    names += [parent for name, (parent, _) in snapshots(cfg).items() if name in names]
    return list(dict.fromkeys(names))


def trained_models(cfg: dict) -> list[str]:
    """The models a `train` job trains: every one with a family (snapshots and ensembles are
    assembled from them). Not only those of this experiment's pairs: Snakemake asks for what it needs."""
    return [n for n, spec in cfg["models"].items() if "family" in spec]


def train_settings(cfg: dict, model: str) -> dict:
    """A model's train settings: the shared `train` under its own `train:` block (which config
    validation has already merged its `family_train` into)."""
    return {**cfg["train"], **cfg["models"][model].get("train", {})}


def epochs(cfg: dict, model: str) -> int:
    """The epochs a model trains for."""
    return train_settings(cfg, model)["epochs"]


def snapshots(cfg: dict) -> dict[str, tuple[str, int]]:
    """Snapshot models, name -> (the model whose training it is taken from, the epoch): an
    `epoch`, or round(fraction * that model's epochs), at least 1."""
    out = {}
    for name, spec in cfg["models"].items():
        if "snapshot_of" in spec:
            parent = spec["snapshot_of"]
            epoch = spec.get("epoch") or max(1, round(spec.get("fraction", 1.0) * epochs(cfg, parent)))
            out[name] = (parent, epoch)
    return out


def snapshot_epochs(cfg: dict, model: str) -> list[int]:
    """The epochs whose weights `model`'s training job keeps for the snapshots taken from it."""
    return sorted({e for parent, e in snapshots(cfg).values() if parent == model})


def ensembles(cfg: dict) -> list[str]:
    """The models that are ensembles of others."""
    return [name for name, spec in cfg["models"].items() if "ensemble" in spec]


def members(cfg: dict, ensemble: str, seed: int) -> list[tuple[str, int]]:
    """An ensemble's members for a job of `seed`: (model, seed), each model at each of the
    ensemble's `seeds`, or at `seed` when it names none."""
    spec = cfg["models"][ensemble]
    return [(m, s) for m in spec["ensemble"] for s in spec.get("seeds") or [int(seed)]]


def bare(spec: dict) -> dict:
    """A model spec without its `train:` overrides: the architecture alone."""
    return {k: v for k, v in spec.items() if k != "train"}


def architecture(cfg: dict, model: str) -> dict | None:
    """A model's spec ({family, knobs}): its own; a snapshot's model's; an ensemble's members' when
    they share one (they then give features), else None (logits only)."""
    spec = cfg["models"][model]
    if "snapshot_of" in spec:
        return architecture(cfg, spec["snapshot_of"])
    if "ensemble" in spec:
        archs = [architecture(cfg, m) for m in spec["ensemble"]]
        if any(a is None for a in archs) or any(bare(a) != bare(archs[0]) for a in archs):
            return None
        return archs[0]
    return spec


def split(lineage: str) -> list[str]:
    return lineage.split(SEP)


def teacher_lineage(lineage: str) -> str:
    """The lineage of the model `lineage` was distilled from: one name when that is a teacher."""
    return SEP.join(split(lineage)[:-1])


def student(lineage: str) -> str:
    return split(lineage)[-1]


def role(cfg: dict, lineage: str) -> str:
    """teacher / student (of some pair) / assistant, by the model's place in the lineage."""
    chain = split(lineage)
    if len(chain) == 1:
        teachers = {p.chain[0] for p in pairs(cfg)} | {parent for parent, _ in snapshots(cfg).values()}
        teachers |= {m for e in ensembles(cfg) for m in cfg["models"][e]["ensemble"]}
        return "teacher" if chain[0] in teachers else "student"
    return "student" if any(p.lineage == lineage for p in pairs(cfg)) else "assistant"


def tuned(cfg: dict, name: str, lineage: str) -> list[str]:
    """The hyperparameters the row `name`'s study tunes on the edge ending `lineage` (none when
    tuning is off): the method's tuned values less those its params fix; for a generative method,
    those the student's family has, and the row's `search` keys too."""
    if not cfg["tuning"]["enabled"]:
        return []
    spec = method_by_name(cfg, name)
    if cfg.get("task") != "generative":
        return [p for p in METHODS[spec.method].tune if p not in spec.params]
    has = GEN_METHODS[spec.method].params[cfg["models"][student(lineage)]["family"]]
    wanted = [p for p in GEN_METHODS[spec.method].tune if p in has] + list(spec.search)
    return [p for p in dict.fromkeys(wanted) if p not in spec.params]
