"""An aiosmtpd handler that records every accepted mail as a JSON file.

smtptest.StartAiosmtpd (aiosmtpd.go) writes it to DIR and runs aiosmtpd
with it, as an SMTP server not written in this project:

    PYTHONPATH=DIR python3 -m aiosmtpd -n -l 127.0.0.1:PORT \
        [--smtputf8] -c aiosmtpd_recorder.Recorder OUTDIR

Each mail becomes OUTDIR/NNNNNN.json (written under a temporary name, then
renamed, so a reader never sees half a file) with the envelope as the
server saw it and the data in base64.
"""

import base64
import itertools
import json
import os


class Recorder:
    def __init__(self, outdir):
        self.outdir = outdir
        self.counter = itertools.count(1)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("Recorder takes one argument: the output directory")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "smtp_utf8": bool(envelope.smtp_utf8),
            "mail_options": envelope.mail_options,
            "data": base64.b64encode(envelope.original_content).decode("ascii"),
        }
        n = next(self.counter)
        tmp = os.path.join(self.outdir, ".%06d.tmp" % n)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(tmp, os.path.join(self.outdir, "%06d.json" % n))
        return "250 Message accepted for delivery"
