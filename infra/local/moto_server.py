"""moto's server mode, as `moto_server` runs it, with each DynamoDB request and SQS send or receive applied whole.

moto serves requests on threads and checks a ConditionExpression apart from the write it guards, so two
racing conditional writes can both pass, which DynamoDB never allows: every item write there is atomic.
The connector's races (two PUTs of one archetype, a key test against a rotation) rely on that, so the
local DynamoDB takes one request at a time. The other services (SQS's long polls included) stay threaded.
"""

import sys
import threading
import time

from moto.dynamodb.responses import DynamoHandler
from moto.server import main
from moto.sqs.models import SQSBackend

_one_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _atomic_call_action(self):
    with _one_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _atomic_call_action

# SQS likewise hands a visible message to one receive only, and a FIFO queue drops a repeated
# deduplication id: in moto both are a check apart from the change it guards, so two racing receives
# could both take one message. Each receive scan and each send is applied whole; a long poll waits
# between scans, outside the lock, so it holds nobody up.
_sqs_lock = threading.Lock()
_receive = SQSBackend.receive_message
_send = SQSBackend.send_message


def _atomic_receive(self, queue_name, count, wait_seconds_timeout, visibility_timeout, *args, **kwargs):
    polling_end = time.time() + (wait_seconds_timeout or 0)
    while True:
        with _sqs_lock:
            result = _receive(self, queue_name, count, 0, visibility_timeout, *args, **kwargs)
        if result or time.time() >= polling_end:
            return result
        time.sleep(0.02)


def _atomic_send(self, *args, **kwargs):
    with _sqs_lock:
        return _send(self, *args, **kwargs)


SQSBackend.receive_message = _atomic_receive
SQSBackend.send_message = _atomic_send

if __name__ == "__main__":
    sys.exit(main())
