"""`fpgaas serve` on emulated PYNQ cards whose every kernel run takes `--call-ms` longer.

    FPGAAS_DEVICE=pynq FPGAAS_PYNQ_EMULATED_CARDS=1 \\
        python benchmarks/slow_card_serve.py --call-ms 10 serve --repository model_repository --port 8000

A card whose calls cost milliseconds (a large network, a long pipeline, a slow link) makes the
device, not the HTTP front end, the server's bottleneck: what the admission budget
(`FPGAAS_MAX_QUEUE_DELAY_MS`) is for. The muon regressor's real kernel is far too fast for that
on this machine, and the CPU twin shares its core with the front end, so `bench_overload` serves
through this: the real PYNQ path (`pynq.allocate`, syncs, the kernel call, the wait) on an
emulated card that computes the kernel's bits and completes each run `--call-ms` after it
started (`EmulatedCard.kernel_latency_s`; the wait blocks on an event, nothing polls).

Everything after the options is `fpgaas`'s own command line; the cards are installed before it
starts, and PYNQ's device factory finds them already there (installation is idempotent).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--call-ms", type=float, required=True, help="extra milliseconds of every kernel run")
    parser.add_argument("fpgaas", nargs=argparse.REMAINDER, help="fpgaas's arguments (e.g. serve --port N)")
    args = parser.parse_args(argv)
    cards = int(os.environ.get("FPGAAS_PYNQ_EMULATED_CARDS", "0"))
    if os.environ.get("FPGAAS_DEVICE") != "pynq" or cards < 1:
        parser.error(
            "set FPGAAS_DEVICE=pynq and FPGAAS_PYNQ_EMULATED_CARDS >= 1: the slow cards are PYNQ cards"
        )
    from fpgaas.cli import main as fpgaas_main
    from fpgaas.service.devices.pynq_emulation import install_emulated_cards

    for card in install_emulated_cards(cards):
        card.kernel_latency_s = args.call_ms / 1e3
    return fpgaas_main(args.fpgaas)


if __name__ == "__main__":
    raise SystemExit(main())
