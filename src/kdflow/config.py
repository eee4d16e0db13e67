"""Config validation: JSON schema, defaults, and the cross-key checks a schema cannot express.

    python -m kdflow.config config/config.yaml   # check a config; exit 1 with the reason

`check_config` fills defaults into the dict it is given and raises `ConfigError` naming the key
(`train.epochs`, `assistants[1]`) and what is allowed. The Snakefile calls it while parsing, so a
bad config stops the run before any job starts and before anything is written.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import yaml

from kdflow.registry import DATASET_RANK, FAMILIES, GENERATED
from kdflow.tracking import redact

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is not allowed; the message names the key."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref")
    return _resolve(schema, schema["$defs"][ref.split("/")[-1]]) if ref else node


def _message(err: jsonschema.ValidationError, schema: dict) -> str:
    key = _key(err.absolute_path)
    node = _resolve(schema, err.schema) if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(node.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        where = f"{key}." if err.absolute_path else ""
        return f"config key '{where}{extra[0]}' is not allowed; allowed keys here: {', '.join(allowed)}"
    if err.validator == "required":
        return f"config key '{key}': {err.message}"
    if err.validator == "propertyNames":
        return (
            f"config key '{key}': name {err.instance!r} is not allowed "
            "(letters, digits and single underscores; '__' separates edge names)"
        )
    if err.validator == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return f"config key '{key}': {err.instance!r} is not allowed; allowed: {allowed}"
    desc = node.get("description") or _parent_description(schema, err)
    hint = f" ({desc})" if desc else ""
    return f"config key '{key}': {err.message}{hint}"


def _parent_description(schema: dict, err: jsonschema.ValidationError) -> str:
    node = schema
    for part in err.absolute_path:
        node = _resolve(schema, node)
        props = node.get("properties", {})
        if isinstance(part, str) and part in props:
            node = props[part]
        elif isinstance(part, str) and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif isinstance(part, int) and "items" in node:
            node = node["items"]
        else:
            return ""
    return _resolve(schema, node).get("description", "")


def fill_defaults(config: dict, schema: dict, root: dict | None = None) -> None:
    """Set every absent key that has a schema default, recursing into objects."""
    root = root or schema
    schema = _resolve(root, schema)
    for name, sub in schema.get("properties", {}).items():
        for node in (sub, _resolve(root, sub)):  # a default beside a $ref wins
            if name not in config and "default" in node:
                config[name] = copy.deepcopy(node["default"])
        if isinstance(config.get(name), dict):
            fill_defaults(config[name], _resolve(root, sub), root)


def check_config(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate `config` in place (defaults filled); raise ConfigError naming the first bad key."""
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(redact(_message(errors[0], schema)))  # it may quote a URI with a password
    fill_defaults(config, schema)
    _check_semantics(config)
    return config


def _check_semantics(c: dict) -> None:
    models = c["models"]
    defined = ", ".join(sorted(models))
    chain = [("teacher", c["teacher"])]
    chain += [(f"assistants[{i}]", n) for i, n in enumerate(c["assistants"])]
    chain += [("student", c["student"])]
    seen: dict[str, str] = {}
    for key, name in chain:
        if name not in models:
            raise ConfigError(
                f"config key '{key}': model {name!r} is not defined under 'models' (defined: {defined})"
            )
        if name in seen:
            raise ConfigError(
                f"config key '{key}': model {name!r} is already used as '{seen[name]}'; "
                "teacher, assistants and student must be distinct models"
            )
        seen[name] = key

    ds = c["dataset"]
    if ds["name"] not in GENERATED:
        if not ds["root"]:
            raise ConfigError(
                f"config key 'dataset.root': dataset {ds['name']!r} is read from disk and needs a root "
                "directory (kdflow never downloads data)"
            )
        if not Path(ds["root"]).is_dir():
            raise ConfigError(f"config key 'dataset.root': directory {ds['root']!r} does not exist")

    rank = DATASET_RANK[c["dataset"]["name"]]
    for name, spec in models.items():
        family = spec["family"]
        family_rank, allowed = FAMILIES[family]
        for knob in spec:
            if knob not in ("family", "train") and knob not in allowed:
                raise ConfigError(
                    f"config key 'models.{name}.{knob}': not a knob of family {family!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
        if family_rank not in (None, rank):
            raise ConfigError(
                f"config key 'models.{name}.family': {family!r} does not take the {rank}-D inputs "
                f"of dataset {c['dataset']['name']!r}"
            )
        if family == "resnet" and (spec.get("depth", 20) - 2) % 6:
            raise ConfigError(
                f"config key 'models.{name}.depth': must be 6n+2 (8, 20, 56, 110), got {spec['depth']}"
            )
        if family == "cnn1d" and spec.get("kernel", 5) % 2 == 0:
            raise ConfigError(f"config key 'models.{name}.kernel': must be odd, got {spec['kernel']}")

    for key in ("temperature", "alpha"):
        r = c["tuning"][key]
        if r["low"] > r["high"]:
            raise ConfigError(
                f"config key 'tuning.{key}': low ({r['low']}) must not exceed high ({r['high']})"
            )

    t = c["tuning"]
    if t["workers"] > t["n_trials"]:
        raise ConfigError(
            f"config key 'tuning.workers': {t['workers']} workers for {t['n_trials']} trials "
            "(tuning.n_trials) would leave some with nothing to do; allowed: 1 to tuning.n_trials"
        )

    if c["tracking"]["uri"]:
        _check_tracking_uri(c["tracking"]["uri"])

    results = Path(c["results_dir"]).resolve()
    existing = next(p for p in [results, *results.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"config key 'results_dir': {str(results)!r} is not writable (checked {existing})")


def _check_tracking_uri(uri: str) -> None:
    """What the schema's prefix pattern cannot say: a host for http(s), a database path for sqlite."""
    shown = redact(uri)  # a refused URI may still carry a password
    allowed = "allowed: sqlite:///<path>.db, http(s)://host[:port][/path], file:///<abs path>"
    try:
        parts = urlsplit(uri)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as e:
        raise ConfigError(f"config key 'tracking.uri': {shown!r} is malformed ({e}); {allowed}") from None
    if uri != uri.strip() or any(ch.isspace() for ch in parts.netloc):
        problem = "has whitespace around it or in its host"
    elif parts.scheme in ("http", "https") and not parts.hostname:
        problem = "has no host"
    elif parts.scheme in ("http", "https") and port == 0:
        problem = "has port 0"
    elif parts.scheme == "sqlite" and (parts.path in ("", "/") or parts.path.endswith("/")):
        problem = "names no database file"
    elif parts.scheme == "file" and parts.path in ("", "/"):
        problem = "names no directory"
    else:
        return
    raise ConfigError(f"config key 'tracking.uri': {shown!r} {problem}; {allowed}")


def main(argv: list[str]) -> int:
    config = yaml.safe_load(Path(argv[0]).read_text()) or {}
    try:
        check_config(config)
    except ConfigError as e:
        print(f"invalid config {argv[0]}: {e}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(config, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
