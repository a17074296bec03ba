"""Reading the whole policy into memory: once per serve process, then it follows the change feed."""

from __future__ import annotations

import time

from policy.categories import NO_MATCH, CategoryMatch, lookup_keys
from policy.modes import GraceIndex, Mode, ModeTable
from policy.rules import RuleIndex
from policy.state import ApprovalIndex, PolicyState, ServiceCatalogue
from policy.store.directory import DirectoryPart
from policy.store.discovery import DiscoveryPart
from policy.store.graces import GracesPart
from policy.store.identity import IdentityPart
from policy.store.modes import ModesPart
from policy.store.requests import RequestsPart
from policy.store.services import ServicesPart


class LoadingPart(IdentityPart, RequestsPart, DirectoryPart, ServicesPart, ModesPart, DiscoveryPart, GracesPart):
    async def load_state(self) -> PolicyState:
        """Everything, for a serve process: version (and epoch) first, so later changes are re-applied, never missed.

        The epoch says which store the policy came from (None: an uninitialised store, see `initialise`).
        """
        epoch, version = await self.identity()
        state = PolicyState(version=version, epoch=epoch)
        for (category, _source), generation in (await self.list_generations()).items():  # the union of sources
            async for batch in self.category_entries(category, generation):
                state.categories.add(category, batch)
        await self._load_the_rest(state)
        return state

    async def state_for(self, host: str | None) -> PolicyState:
        """What one request needs without loading every list (its host's entries, and all the rest): the CLI.

        The entries asked for are the host's name suffixes, or for an IP its address and every range that could
        hold it (33 or 129 members), so a CIDR entry is found without scanning a list.
        """
        suffixes = lookup_keys(host) if host else []
        generations = await self.list_generations()  # every source's list: a category is their union
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.key("policy", "version"))
            for (category, _source), generation in generations.items():
                if suffixes:
                    pipe.smismember(self.key("cat", category, generation), suffixes)
            results = await pipe.execute()
        state = PolicyState(version=int(results[0] or 0))
        if suffixes:
            for (category, _source), flags in zip(generations, results[1:], strict=True):
                state.categories.add(category, [entry for entry, hit in zip(suffixes, flags, strict=True) if hit])
        await self._load_the_rest(state)
        return state

    async def _load_the_rest(self, state: PolicyState) -> None:
        """Everything but the category lists: approvals, rules, the directory, exemptions, admin services, modes."""
        state.approvals = ApprovalIndex(await self.all_approvals())
        state.rules = RuleIndex(await self.list_rules())
        state.directory = await self.load_directory()
        state.exemptions = tuple(await self.exemptions())
        state.services = ServiceCatalogue(await self.admin_services())  # the caller puts the shipped ones first
        state.modes = ModeTable.build(Mode.ENFORCE, await self.list_modes())  # over the config file's, when judged
        state.graces = GraceIndex({grace.id: grace for grace in await self.graces(time.time())})

    async def lookup_categories(self, host: str) -> CategoryMatch:
        state = await self.state_for(host)
        return state.categories.match(host) if len(state.categories) else NO_MATCH
