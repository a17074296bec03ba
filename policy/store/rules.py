"""The small admin tables: URL rules and address exemptions. Each change announces the whole table after it.

The tables are short, so a worker is sent all of it and never reads it back. The table is WATCHed from
reading it to committing the write, so the table announced is exactly the one stored, even when two admins
change it at once (the second one retries).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import WatchError

from policy.rules import Rule, RuleKind
from policy.state import Exemption
from policy.store.audit import AuditPart
from policy.store.base import in_id_order
from policy.store.changes import Change, ExemptionsChanged, RulesChanged
from policy.store.errors import StoreError


def sorted_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    return tuple(in_id_order((Rule.from_json(text) for text in texts), "R"))


def sorted_exemptions(texts: Iterable[str]) -> tuple[Exemption, ...]:
    return tuple(in_id_order((Exemption.from_json(text) for text in texts), "E"))


class RulesPart(AuditPart):
    async def _write_record(
        self,
        table: str,
        record_id: str,
        text: str | None,
        actor: str,
        announce: Callable[[list[str]], Change],
        department: str | None = None,
        verbs: tuple[str, str] = ("add", "remove"),
    ) -> None:
        """Set one record of a table (or delete it: `text` None), audit it and announce the table after it.

        The audit action is `{table}-{verb}` (`rule-add`, `mode-set`); `department` files it under one.
        StoreError when deleting a record that is not there.
        """
        key = self.key(f"{table}s")
        await self._load_scripts()
        while True:
            pipeline: Any = self.client.pipeline(transaction=True)  # WATCH/MULTI: redis-py leaves them untyped
            async with pipeline as pipe:
                try:
                    await pipe.watch(key)
                    records = {str(k): str(v) for k, v in (await pipe.hgetall(key)).items()}
                    old = records.pop(record_id, None)
                    if text is None and old is None:
                        raise StoreError(f"no {table} with id {record_id!r}")
                    pipe.multi()
                    if text is None:
                        pipe.hdel(key, record_id)
                    else:
                        pipe.hset(key, record_id, text)
                        records[record_id] = text
                    action = f"{table}-{verbs[1] if text is None else verbs[0]}"
                    self._audit(pipe, actor, action, record_id, department, _parsed(old), _parsed(text))
                    self._publish(pipe, announce(list(records.values())))
                    await pipe.execute()
                    return
                except WatchError:
                    continue  # the table changed meanwhile: read it again

    # ---- rules ----------------------------------------------------------------------------

    async def add_rule(
        self,
        kind: RuleKind,
        host: str,
        path_prefix: str = "/",
        category: str | None = None,
        note: str = "",
        actor: str = "clearance",
    ) -> Rule:
        number = await self.client.incr(self.key("rule", "seq"))
        rule = Rule(id=f"R{number}", kind=kind, host=host, path_prefix=path_prefix, category=category, note=note)
        await self._write_record("rule", rule.id, rule.to_json(), actor, _rules_changed)
        return rule

    async def remove_rule(self, rule_id: str, actor: str = "clearance") -> None:
        await self._write_record("rule", rule_id, None, actor, _rules_changed)

    async def list_rules(self) -> list[Rule]:
        return list(sorted_rules(await self._records("rules")))

    # ---- exemptions -------------------------------------------------------------------------

    async def exemptions(self) -> list[Exemption]:
        return list(sorted_exemptions(await self._records("exemptions")))

    async def add_exemption(self, network: str, categories: frozenset[str], note: str, actor: str) -> Exemption:
        exemption = Exemption(
            id=f"E{await self.client.incr(self.key('exemption', 'seq'))}",
            network=network,
            categories=categories,
            note=note,
        )
        await self._write_record("exemption", exemption.id, exemption.to_json(), actor, _exemptions_changed)
        return exemption

    async def remove_exemption(self, exemption_id: str, actor: str) -> None:
        await self._write_record("exemption", exemption_id, None, actor, _exemptions_changed)


def _parsed(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None


def _rules_changed(texts: list[str]) -> Change:
    return RulesChanged(rules=sorted_rules(texts))


def _exemptions_changed(texts: list[str]) -> Change:
    return ExemptionsChanged(exemptions=sorted_exemptions(texts))
