"""Write the methods' declarations, without torch, for config validation (kdflow.registry):

python -m kdflow.methods        # after adding a method or changing its params
"""

import json

from kdflow.methods import METHODS
from kdflow.registry import METHODS_FILE


def declarations() -> dict:
    return {
        name: {
            "features": m.feature_kind,
            "pretrain": m.pretrain is not None,
            "params": {k: p.default for k, p in m.declared().items()},
            "tune": list(m.tune),
            "tunable": [k for k, p in m.params.items() if p.tunable],
            "bounds": {k: list(p.valid) for k, p in m.params.items() if p.valid is not None},
            "reshapes_student": m.reshapes_student,
        }
        for name, m in METHODS.items()
    }


if __name__ == "__main__":
    METHODS_FILE.write_text(json.dumps(declarations(), indent=1) + "\n")
    print(f"wrote {METHODS_FILE}: {', '.join(METHODS)}")
