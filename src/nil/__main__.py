import sys

from nil.cli import main

sys.exit(main())
