"""An rq 3.0 cron config, as `rq cron` and `aiorq cron` read it (see docs/cron.md).

Run it with `aiorq cron --path examples cron_config` (or `rq cron --path examples cron_config`)
and a worker on my_queue with the examples directory on its import path.
"""

import mylib
from rq import cron

# Every 10 minutes (the first time at start-up): mylib.add(1, 2) on my_queue.
cron.register(mylib.add, 'my_queue', args=(1, 2), interval=600)

# Every day at 03:30 server local time: a coroutine job, with a one-minute timeout.
cron.register(mylib.async_add, 'my_queue', args=(3, 4), cron='30 3 * * *', job_timeout=60)
