"""The seed article's aiohttp call, with kimiflow's ``AsyncKimi``: many questions at once.

The seed opened a session per call and raised a bare Exception on any non-200; ``AsyncKimi`` keeps
one connection pool, retries what is safe to retry and raises typed errors
(``kimiflow.RateLimitError``, ``kimiflow.AuthenticationError``...).

    MOONSHOT_API_KEY=sk-... python examples/async_chat.py "你好" "講個冷笑話吧"
"""

import asyncio
import sys

from kimiflow import AsyncKimi


async def chat_kimi(client: AsyncKimi, problem: str) -> str:
    response = await client.chat.completions.create(
        model="moonshot-v1-8k",
        messages=[{"role": "user", "content": problem}],
        temperature=0.5,
        max_tokens=1024,
    )
    return response.choices[0].message.content or ""


async def main(questions: list[str]) -> None:
    async with AsyncKimi() as client:  # reads MOONSHOT_API_KEY and MOONSHOT_BASE_URL
        answers = await asyncio.gather(*(chat_kimi(client, q) for q in questions))
    for question, answer in zip(questions, answers, strict=True):
        print(f"user:{question}\nKimi:{answer}\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["你好"]))
