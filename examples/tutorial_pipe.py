"""A pipe between two processes: the multiprocessing docs' "Exchanging objects between
processes: Pipes", awaited.

Mirrors ``f(conn)`` sending ``[42, None, 'hello']`` through one end of a ``Pipe()`` and
the parent printing ``parent_conn.recv()``. The child's code is unchanged; the parent
awaits ``arecv()``, then reads the child's further messages with ``async for``, which
ends when the child has closed its end.

Run it with ``python examples/tutorial_pipe.py`` (add ``--loop uvloop`` or ``--loop trio``,
``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse

import anyio

import aiomp


def f(conn: aiomp.Connection) -> None:
    conn.send([42, None, "hello"])
    for word in ("more", "to", "come"):
        conn.send(word)
    conn.close()


async def main(context: str | None) -> None:
    parent_conn, child_conn = aiomp.Pipe()
    async with aiomp.Process(target=f, args=(child_conn,), context=context) as p:
        # The child has its own copy now. Close this one, or the pipe never reports
        # the end (EOF), since this process could still send on it.
        child_conn.close()
        print(await parent_conn.arecv())  # prints "[42, None, 'hello']"
        async for message in parent_conn:  # until the child closes its end
            print(message)
    parent_conn.close()
    print("exit code", p.exitcode)


if __name__ == "__main__":  # needed: the child imports this module
    parser = argparse.ArgumentParser(description="A pipe between two processes.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
