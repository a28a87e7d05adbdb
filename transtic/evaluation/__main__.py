import sys

from .cli import eval_main

sys.exit(eval_main(sys.argv[1:]))
