"""nbclient's NotebookClient without its widget hang (used by tests/test_notebooks.py and tools/*_notebooks.py).

The hang (jupyter/nbclient#312; seen here in 01 and 06): nbclient plays the front end of Output widgets, and
when a cell clears an Output widget, its mimic (``nbclient.output_widget.OutputWidget``) syncs the state back
with a ``comm_msg`` sent on the **shell** socket -- from inside the task that reads iopub, while another task
awaits the cell's ``execute_reply`` by polling that same shell socket. A send on a ZeroMQ socket processes its
pending commands, and with them the edge of its ``ZMQ_FD`` that announced the reply: the reply sits in the
socket but the poller is never woken. The cell then waits until its timeout (zmq's poll makes one last check
when the timer fires, finds the reply, and the run goes on: a stall of exactly the timeout) or, with no timeout
(nbconvert's and papermill's default), forever -- kernel idle, client idle.

Measured (tools/soak_notebooks.py, 2 cores, load 15-20): 06 stalled 150.0 s (= --timeout) in 2 of 32 runs of
01/06 and once did not answer at all; a kernel that runs 400 cells each clearing an Output widget stalled
exactly the cell timeout once in 400, and 0 times in 400 cells without the widget. iopub counts: at most 32
messages per cell, none dropped -- not the PUB high-water mark (1000).

The fix is at the cause: the comm messages the client originates go out on a DEALER socket of their own
(the kernel takes a ``comm_msg`` from any connection; it has no reply), so nothing ever sends on the socket
being polled for the reply.
"""

from __future__ import annotations

import typing as t

import nbclient
import zmq
from nbclient.jsonutil import json_clean
from nbclient.output_widget import OutputWidget


class _OutputWidget(OutputWidget):
    """nbclient's Output widget mimic, sending its state through the client's comm socket."""

    def _publish_msg(
        self,
        msg_type: str,
        data: dict | None = None,
        metadata: dict | None = None,
        buffers: list | None = None,
        **keys: t.Any,
    ) -> None:
        content = json_clean(dict(data={} if data is None else data, comm_id=self.comm_id, **keys))
        msg = self.kernel_client.session.msg(
            msg_type, content=content, parent=self.parent_header, metadata={} if metadata is None else metadata
        )
        self.executor.send_comm(msg)


class NotebookClient(nbclient.NotebookClient):
    """``nbclient.NotebookClient`` whose Output-widget mimic never sends on the polled shell socket."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.widget_registry["@jupyter-widgets/output"]["OutputModel"] = _OutputWidget
        self._comm_socket = None

    def send_comm(self, msg: dict) -> None:
        """Send a message the client originates (no reply expected) on a DEALER of its own."""
        if self._comm_socket is None:
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.linger = 1000
            sock.connect(self.kc._make_url("shell"))
            self._comm_socket = sock
        self.kc.session.send(self._comm_socket, msg)

    async def _async_cleanup_kernel(self) -> None:
        if self._comm_socket is not None:
            self._comm_socket.close(linger=1000)
            self._comm_socket = None
        await super()._async_cleanup_kernel()
