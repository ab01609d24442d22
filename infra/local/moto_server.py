"""moto's server mode, as `moto_server` runs it, with each DynamoDB request applied whole.

moto serves requests on threads and checks a ConditionExpression apart from the write it guards, so two
racing conditional writes can both pass, which DynamoDB never allows: every item write there is atomic.
The connector's races (two PUTs of one archetype, a key test against a rotation) rely on that, so the
local DynamoDB takes one request at a time. The other services (SQS's long polls included) stay threaded.
"""

import sys
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_one_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _atomic_call_action(self):
    with _one_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _atomic_call_action

if __name__ == "__main__":
    sys.exit(main())
