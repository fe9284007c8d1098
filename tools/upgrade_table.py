"""`python -m tools.upgrade_table --table NAME`: move an existing table's items to the current
key layout, once, after deploying the version that reads it (docs/DEPLOY.md, "Upgrading").
Uses boto3's usual credentials and region; safe to run again."""

from __future__ import annotations

import argparse

from core.aws.dynamodb.upgrade import TableUpgrade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.upgrade_table", description=__doc__)
    parser.add_argument("--table", required=True, help="the stack's table (output TableName)")
    args = parser.parse_args(argv)
    result = TableUpgrade(args.table).move_servers()
    print(
        f"servers moved to their own partitions: {result.moved}; already there: {result.kept};"
        f" old round-robin counters removed: {result.sequences_removed}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
