"""A local InspIRCd (Debian's `inspircd`, installed by scripts/run.sh ensure_inspircd) on a
free loopback port: the real IRC server with IRCv3 message tags that the bot's tests and the
bot benchmark talk to. Like gateway/redis_server.py, it only starts and stops the server.

Client tags (`+`-prefixed) pass through, so Twitch's server tags are sent as `+` tags and
read with `trust_client_tags`. Flood protection is off (`fakelag`, `commandrate`) so a fast
client is never throttled; `sendq_bytes` bounds what the server buffers per client.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from gateway.redis_server import free_port

CONFIG = """\
<server name="irc.local" description="rally local" network="RallyLocal">
<admin name="r" nick="r" email="r@r">
<bind address="127.0.0.1" port="{port}" type="clients">
<power diepass="x" restartpass="x">
<connect name="main" allow="*" timeout="60" pingfreq="120" hardsendq="{hard}"
 recvq="{soft}" softsendq="{soft}" localmax="5000" globalmax="5000" maxchans="200"
 fakelag="off" threshold="100000000" commandrate="100000000" limit="10000" useident="no"
 resolvehostnames="no">
<channels users="200" opers="200">
<limits maxnick="30" maxchan="64" maxline="1024">
<security runasuser="nobody">
<performance somaxconn="128" clonesonconnect="no" quietbursts="yes" timeskipwarn="0">
<pid file="{dir}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT -MODULE" level="default" target="{dir}/ircd.log">
<module name="cap">
<module name="ircv3">
<module name="ircv3_ctctags">
<module name="ircv3_msgid">
<module name="ircv3_servertime">
"""
SENDQ_BYTES = 1_048_576
"""Per-client buffer (recvq, softsendq); the hard send queue is ten times this."""


class IrcdUnavailable(RuntimeError):
    """InspIRCd is not installed, or did not start listening in time."""


class InspIRCd:
    """`InspIRCd(dir).start()` ... `.stop()`; `.port` is where clients connect."""

    def __init__(self, directory: Path, *, sendq_bytes: int = SENDQ_BYTES) -> None:
        self.dir = directory
        self.port = free_port()
        self.sendq_bytes = sendq_bytes
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> InspIRCd:
        binary = shutil.which("inspircd") or "/usr/sbin/inspircd"
        if not Path(binary).exists():
            raise IrcdUnavailable("inspircd is not installed (scripts/run.sh ensure_inspircd)")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "inspircd.conf"
        soft = self.sendq_bytes
        conf.write_text(CONFIG.format(port=self.port, dir=self.dir, soft=soft, hard=soft * 10))
        self.proc = subprocess.Popen(
            [binary, "--nofork", "--runasroot", "--config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.dir / "ircd.log"
                raise IrcdUnavailable(
                    f"inspircd exited: {log.read_text() if log.exists() else 'no log'}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            time.sleep(0.05)
        self.stop()
        raise IrcdUnavailable("inspircd did not listen in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
