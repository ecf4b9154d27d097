"""A deliberately slow HTTP/1.1 upstream: it reads request bodies at a fixed rate, then answers
``200`` with the number of body bytes it received. A proxy in front of it must push back on
the client (backpressure) instead of buffering what the upstream has not read yet.

    python -m bench.slow_upstream PORT RATE_MIB_PER_S
"""

from __future__ import annotations

import asyncio
import sys

CHUNK = 64 * 1024


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                if name.strip().lower() == b"transfer-encoding":
                    raise ValueError("this upstream takes Content-Length bodies only")
            received = 0
            start = loop.time()
            while received < length:
                chunk = await reader.read(min(CHUNK, length - received))
                if not chunk:
                    return
                received += len(chunk)
                ahead = received / rate - (loop.time() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            body = str(received).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int, rate_mib: float) -> None:
    rate = rate_mib * 1024 * 1024
    server = await asyncio.start_server(lambda r, w: handle(r, w, rate), "127.0.0.1", port,
                                        limit=CHUNK)
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
