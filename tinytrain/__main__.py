import sys

from tinytrain.cli import main

sys.exit(main())
