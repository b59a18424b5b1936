"""The seed article's synchronous ``chat_kimi()``, with kimiflow.

Run against the real API:      MOONSHOT_API_KEY=sk-... python examples/sync_chat.py "你好"
Run against the simulator:     kimiflow sim --port 8000 &   then
    MOONSHOT_BASE_URL=http://127.0.0.1:8000/v1 MOONSHOT_API_KEY=sk-sim-kimiflow-local-0000000000000000 \\
    python examples/sync_chat.py "你好"
"""

import sys

from kimiflow import Kimi

client = Kimi()  # reads MOONSHOT_API_KEY and MOONSHOT_BASE_URL (default https://api.moonshot.cn/v1)


def chat_kimi(problem: str) -> str:
    """Ask once and return the answer; retries, timeouts and typed errors come with the client."""
    response = client.chat.completions.create(
        model="moonshot-v1-8k",
        messages=[
            {"role": "system", "content": "你是一位語言藝術大師"},
            {"role": "user", "content": problem},
        ],
        temperature=0.5,
        max_tokens=1024,
    )
    return response.choices[0].message.content or ""


def read_question() -> str:
    """The question from the command line, else one line typed (or piped) in."""
    if len(sys.argv) > 1:
        return sys.argv[1]
    try:
        # The "user:" prompt only makes sense to a person at a terminal.
        question = input("user:" if sys.stdin.isatty() else "")
    except EOFError:
        question = ""
    if not question.strip():
        # No argument and nothing on stdin (e.g. run from a script): say how to call it, no traceback.
        print('usage: python examples/sync_chat.py "QUESTION"  (or type the question at a terminal)',
              file=sys.stderr)
        raise SystemExit(2)
    return question


if __name__ == "__main__":
    question = read_question()
    print(f"Kimi:{chat_kimi(question)}")
    # The same in one call: client.ask(question, system="你是一位語言藝術大師")
