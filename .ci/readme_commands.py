"""Prints the README's two commands, one per line: the bash blocks of its
"## Two commands" section (first the demo, then the tests). CI runs what this
prints, so the README and CI cannot drift apart."""

import re
import sys


def readme_commands(text):
    section = re.search(r"^## Two commands.*?$(.*?)(?=^## )", text, re.S | re.M)
    if not section:
        sys.exit("README: no '## Two commands' section")
    blocks = [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)]
    if len(blocks) != 2 or any("\n" in block for block in blocks):
        sys.exit(f"README: the '## Two commands' section must hold two one-line bash blocks; found {blocks}")
    return blocks


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print("\n".join(readme_commands(f.read())))
