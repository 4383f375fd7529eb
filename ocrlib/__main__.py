import os
import sys

from .cli import main

if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: its failure report shows the error
    from torch.distributed.elastic.multiprocessing.errors import record

    main = record(main)

sys.exit(main())
