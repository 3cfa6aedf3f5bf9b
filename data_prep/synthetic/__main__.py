"""Entry: ``python -m data_prep.synthetic --out DIR ...`` (see ``generate.py``)."""
import sys

from data_prep.synthetic.generate import main

sys.exit(main())
