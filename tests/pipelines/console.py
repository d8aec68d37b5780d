"""Pipelines for the console and log tests."""

from __future__ import annotations

import logging

import durapipe as dp

log = logging.getLogger("console_pipelines")


@dp.step
def note(text: str) -> str:
    dp.logger.info("note: %s", text)
    return text


@dp.pipeline(version="1")
async def chatty() -> str:
    await dp.exec("sh", "-c", "echo out-line; echo err-line >&2")
    await note("inside a step")
    log.warning("from the pipeline body")
    await dp.exec("sh", "-c", 'echo "$1"', "sh", "second")
    return "ok"


@dp.pipeline(version="1")
async def child_echo(word: str) -> str:
    await dp.exec("echo", word)
    return word


@dp.pipeline(version="1")
async def tree() -> list:
    a = await dp.run_subpipeline(child_echo, word="alpha")
    b = await dp.exec("echo", "root-line")
    return [a, b.stdout.strip()]


@dp.pipeline(version="1")
async def killed_midway() -> str:
    await dp.exec("echo", "first")
    await dp.exec(
        "sh",
        "-c",
        'echo second-start; while [ ! -e "$SIDE_DIR/go" ]; do sleep 0.05; done; echo second-end',
    )
    await dp.exec("echo", "third")
    return "done"


@dp.pipeline(version="1")
async def with_secret() -> str:
    tok = dp.secret("DP_TEST_TOKEN")
    res = await dp.exec("sh", "-c", 'echo "env=$TOK arg=$1"', "sh", tok, env={"TOK": tok})
    dp.logger.info("the token is %s", tok.reveal())
    return res.stdout
