import sys

from ngrad.cli import main

sys.exit(main())
