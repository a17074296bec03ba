"""The roll-out modes set at run time (`clearance modes set`): a short table, announced whole at every change.

`modes` (hash): `{scope}:{name}` -> the `policy.modes.ModeSetting` JSON. Each change is audited (`mode-set`,
`mode-clear`, with the actor, and under the department when the setting is one's) and announced as
`ModesChanged` with every setting after it, in the transaction that makes it, so each worker has the new table
within a pub/sub round trip. The config file's modes are not here: a worker puts the store's over them.
"""

from __future__ import annotations

from policy.modes import ModeSetting, Scope
from policy.store.changes import Change, ModesChanged
from policy.store.rules import RulesPart

VERBS = ("set", "clear")


def _modes_changed(texts: list[str]) -> Change:
    return ModesChanged(modes=tuple(sorted((ModeSetting.from_json(text) for text in texts), key=lambda m: m.id)))


class ModesPart(RulesPart):
    async def list_modes(self) -> list[ModeSetting]:
        return sorted((ModeSetting.from_json(text) for text in await self._records("modes")), key=lambda m: m.id)

    async def set_mode(self, setting: ModeSetting, actor: str) -> None:
        department = setting.name if setting.scope is Scope.DEPARTMENT else None
        await self._write_record("mode", setting.id, setting.to_json(), actor, _modes_changed, department, VERBS)

    async def clear_mode(self, scope: Scope, name: str, actor: str) -> None:
        """StoreError when no mode is set for that scope in the store."""
        department = name if scope is Scope.DEPARTMENT else None
        await self._write_record("mode", f"{scope}:{name}", None, actor, _modes_changed, department, VERBS)
