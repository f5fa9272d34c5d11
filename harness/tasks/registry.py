"""The known tasks. Adding a task is its folder plus one line here."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Task
from .science import ScienceTask
from .tooluse import ToolUseTask

TASKS: dict[str, Task] = {
    "tooluse": ToolUseTask(),
    "science": ScienceTask(),
}


def get_task(name: str, where: str | None = None) -> Task:
    """The registered task `name`; else a ConfigError naming the key path `where` (e.g.
    'stages[1].task') and the known names."""
    if name in TASKS:
        return TASKS[name]
    prefix = f"{where}: " if where else ""
    raise ConfigError(f"{prefix}unknown task {name!r} (known: {', '.join(sorted(TASKS))})")
