import sys

from DFM50NLib.cli import main

sys.exit(main())
