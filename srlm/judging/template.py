"""Judge prompt templates. The paper's additive 5-point prompt ships verbatim as templates/additive_5pt.txt."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from srlm.errors import ConfigError

PLACEHOLDERS = ("{instruction}", "{response}")


@lru_cache(maxsize=16)
def load_template(name_or_path: str = "additive_5pt") -> str:
    """A shipped template by name, or a template file by path; it must contain {instruction} and {response}."""
    path = Path(name_or_path).expanduser()
    if path.suffix and path.exists():
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        shipped = resources.files("srlm.judging").joinpath("templates", f"{name_or_path}.txt")
        if not shipped.is_file():
            raise ConfigError(f"judge.template: no shipped template {name_or_path!r} and no such file")
        text = shipped.read_text(encoding="utf-8")
        where = f"shipped template {name_or_path}"
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise ConfigError(f"{where}: judge template lacks {', '.join(missing)}")
    return text


def render_judge_prompt(template: str, instruction: str, response: str) -> str:
    """Fill the template. Plain replacement, not str.format: responses routinely contain braces."""
    # Fill {response} last so that an instruction containing the literal text "{response}" stays as written.
    head, sep, tail = template.partition("{response}")
    return head.replace("{instruction}", instruction) + (response if sep else "") + tail.replace("{instruction}", instruction)
