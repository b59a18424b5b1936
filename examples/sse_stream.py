"""The seed article's SSE stream, with kimiflow: no hand-written line parsing.

kimiflow's SSE decoder handles split frames, keep-alive comments and ``[DONE]``; a stream that
stalls raises ``StreamIdleTimeoutError`` instead of hanging, and one cut short raises
``IncompleteStreamError``. Usage arrives with the final chunk.

    MOONSHOT_API_KEY=sk-... python examples/sse_stream.py "講個冷笑話吧"
"""

import asyncio
import sys

from kimiflow import AsyncKimi


async def sse_request(problem: str) -> None:
    async with AsyncKimi() as client:  # reads MOONSHOT_API_KEY and MOONSHOT_BASE_URL
        request = client.chat.completions.stream(
            model="moonshot-v1-128k",
            messages=[{"role": "user", "content": problem}],
            temperature=0.8,
        )
        async with request as stream:
            async for text in stream.text_stream:
                print(text, end="", flush=True)
            final = await stream.get_final_completion()
    print()
    if final.usage is not None:
        print(f"[{final.usage.total_tokens} tokens]", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(sse_request(sys.argv[1] if len(sys.argv) > 1 else "講個冷笑話吧"))
