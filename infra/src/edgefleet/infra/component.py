"""What every edgefleet Pulumi component shares: the project and the resources it waits for (its arguments'
base), and how its children are created (parented to the component, after those resources)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi


@dataclass(frozen=True, kw_only=True)
class ComponentArgs:
    """Arguments every component takes.

    Attributes:
        project: Project id.
        depends_on: What every child waits for (the APIs it is created through).
    """

    project: str
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class Component(pulumi.ComponentResource):
    """A component resource whose children are parented to it and wait for its `depends_on`."""

    def __init__(self, type_name: str, name: str, args: ComponentArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(type_name, name, None, opts)
        self._depends_on = list(args.depends_on)

    def _child(self, *after: pulumi.Resource, **options: Any) -> pulumi.ResourceOptions:
        """Options of a child: parented here, after the component's `depends_on` (and `after`)."""
        return pulumi.ResourceOptions(parent=self, depends_on=[*self._depends_on, *after], **options)
