"""Fail when a Python file under the given folder has a line over 100
characters or a tab for indentation."""

import pathlib
import sys


def main(root: str) -> int:
    problems = []
    for path in sorted(pathlib.Path(root).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if len(line) > 100:
                problems.append(f"{path}:{number}: line longer than 100 characters")
            if line.startswith("\t"):
                problems.append(f"{path}:{number}: tab used for indentation")
    for problem in problems:
        print(problem)
    print(f"checked {root}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
