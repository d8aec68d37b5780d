"""``dp.tag``: label the running run (``key=value``), journaled; and the rules tags follow.

Tags are a run's searchable labels: ``durapipe start --tag env=prod``, ``Client.start(...,
tags=)``, ``await dp.tag(customer="acme")`` during the run; ``durapipe list --tag env=prod``
finds runs by them (several tags AND together). A key holds one value; setting it again
replaces the value. A run continued with ``dp.continue_as_new`` hands its tags to its successor.
"""

from __future__ import annotations

from .. import _serde
from .._kinds import EventKind, Family
from .._tag_rules import check_tag, check_tags, parse_tags
from ..errors import InvalidInput
from .context import current
from .journaled import begin

# The rules are a module of their own (the CLI and the client check tags without the engine);
# the rest of durapipe imports them from here too.
__all__ = ["check_tag", "check_tags", "parse_tags", "tag"]


async def tag(**tags: str | int | float | bool) -> None:
    """Set tags on the running run: ``await dp.tag(customer="acme", tier="gold")``.

    Journaled (replay sets nothing again); the tags are stored with the call's event in one
    write, so ``durapipe list --tag customer=acme`` finds the run from then on. A key set again
    gets its new value. Keys are short identifiers; values are text (numbers and booleans are
    taken as text), at most 200 characters.

    Raises:
        InvalidInput: no tags, or a key or value that is not usable.
        NotInPipeline: called outside a running pipeline.
    """
    checked = check_tags(tags, where="dp.tag")
    if not checked:
        raise InvalidInput("dp.tag needs at least one tag, e.g. await dp.tag(env='prod')")
    ctx, branch = current("tag")
    call = begin(ctx, branch, Family.TAG, "tag", None)
    if call.done is not None:
        return
    await ctx.write(call.event(EventKind.TAG_SET, _serde.dumps({"tags": checked})), tags=checked)
