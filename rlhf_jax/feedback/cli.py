"""`python -m rlhf_jax.feedback <verb>`: init, adduser, import, serve, export, agreement,
simulate (and migrate). Every verb but simulate works on the site folder `--home` (default
$RLHF_FEEDBACK_HOME or ./feedback_site). Bad input ends with one line naming the problem, exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from rlhf_jax.errors import UserError
from rlhf_jax.feedback import site


def _password(args, who: str) -> str:
  if args.password:
    return args.password
  if os.environ.get("RLHF_FEEDBACK_PASSWORD"):
    return os.environ["RLHF_FEEDBACK_PASSWORD"]
  return getpass.getpass(f"password for {who}: ")


def _django(args):
  home = site.home_dir(args.home)
  site.setup(home)
  return home


def _migrate(verbosity=0):
  from django.core.management import call_command  # pylint: disable=g-import-not-at-top
  call_command("migrate", interactive=False, verbosity=verbosity)


def cmd_init(args):
  home = site.home_dir(args.home)
  site.create(home, args.db)
  site.setup(home)
  _migrate()
  from rlhf_jax.feedback import users  # pylint: disable=g-import-not-at-top
  users.add_user(args.admin, _password(args, args.admin), admin=True)
  print(f"feedback site in {home} (database {site.read(home)['database'].split('@')[-1]}); "
        f"admin {args.admin!r} created. Next: import tasks, then serve.")


def cmd_migrate(args):
  _django(args)
  _migrate(verbosity=1)


def cmd_adduser(args):
  _django(args)
  from rlhf_jax.feedback import users  # pylint: disable=g-import-not-at-top
  users.add_user(args.username, _password(args, args.username), admin=args.admin)
  print(f"{'admin' if args.admin else 'labeler'} {args.username!r} added")


def cmd_import(args):
  _django(args)
  from rlhf_jax.feedback import importer  # pylint: disable=g-import-not-at-top
  n = importer.import_files(args.files, kind=args.kind, batch=args.batch,
                            overlap_fraction=args.overlap_fraction, overlap=args.overlap,
                            gold_overlap=args.gold_overlap, seed=args.seed)
  print(f"imported {n} tasks from {', '.join(args.files)}")


def cmd_serve(args):
  _django(args)
  _migrate()  # an older site's database is upgraded before the first request
  import waitress  # pylint: disable=g-import-not-at-top
  from rlhf_jax.feedback.wsgi import application  # pylint: disable=g-import-not-at-top
  if args.host != "127.0.0.1":
    print(f"warning: listening on {args.host}; put HTTPS in front (RLHF_FEEDBACK_HTTPS=1)",
          file=sys.stderr)
  print(f"serving on http://{args.host}:{args.port}/", flush=True)
  waitress.serve(application, host=args.host, port=args.port, threads=args.threads,
                 channel_timeout=60, _quiet=True)


def cmd_export(args):
  _django(args)
  from rlhf_jax.feedback import exporter  # pylint: disable=g-import-not-at-top
  if args.require_complete:
    left = exporter.incomplete(args.batch)
    if left:
      print(f"{left} task slot(s) of {args.batch or 'the site'} are not labelled yet",
            file=sys.stderr)
      sys.exit(3)
  counts = exporter.export_dir(args.out, args.batch, args.include_gold)
  print(f"exported {counts['comparisons']} comparisons and {counts['demonstrations']} "
        f"demonstrations to {args.out}")


def cmd_agreement(args):
  _django(args)
  from rlhf_jax.feedback import report  # pylint: disable=g-import-not-at-top
  r = report.compute(args.batch)
  if args.json:
    print(json.dumps(r, default=lambda o: getattr(o, "__dict__", str(o))))
  else:
    print(report.format_text(r))


def cmd_simulate(args):
  from rlhf_jax.feedback import simulate  # pylint: disable=g-import-not-at-top
  counts = simulate.run(args.url, simulate.parse_users(args.users), seed=args.seed,
                        max_tasks=args.max_tasks)
  print("answered: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m rlhf_jax.feedback", description=__doc__)
  sub = p.add_subparsers(dest="verb", required=True)

  def verb(name, fn, help_):
    s = sub.add_parser(name, help=help_)
    s.set_defaults(fn=fn)
    if name != "simulate":
      s.add_argument("--home", help="site folder (default $RLHF_FEEDBACK_HOME or ./feedback_site)")
    return s

  s = verb("init", cmd_init, "create the site: secret key, database, first admin")
  s.add_argument("--db", help="database URL (default: sqlite file in the site folder)")
  s.add_argument("--admin", default="admin")
  s.add_argument("--password")
  verb("migrate", cmd_migrate, "upgrade the database to this version's schema")
  s = verb("adduser", cmd_adduser, "add a labeler (or --admin)")
  s.add_argument("username")
  s.add_argument("--admin", action="store_true")
  s.add_argument("--password")
  s = verb("import", cmd_import, "import tasks from JSON-lines files")
  s.add_argument("files", nargs="+")
  s.add_argument("--kind", choices=("ranking", "pairwise", "demo"))
  s.add_argument("--batch", default="")
  s.add_argument("--overlap-fraction", type=float, default=0.0)
  s.add_argument("--overlap", type=int, default=2, help="labelers per overlap task")
  s.add_argument("--gold-overlap", type=int, default=20)
  s.add_argument("--seed", type=int, default=0)
  s = verb("serve", cmd_serve, "run the web app")
  s.add_argument("--host", default="127.0.0.1")
  s.add_argument("--port", type=int, default=8000)
  s.add_argument("--threads", type=int, default=8)
  s = verb("export", cmd_export, "write comparisons.jsonl and demonstrations.jsonl")
  s.add_argument("--out", required=True)
  s.add_argument("--batch")
  s.add_argument("--include-gold", action="store_true")
  s.add_argument("--require-complete", action="store_true",
                 help="exit 3 without writing while any slot of the batch is unlabelled")
  s = verb("agreement", cmd_agreement, "inter-labeler agreement and bias")
  s.add_argument("--batch")
  s.add_argument("--json", action="store_true")
  s = verb("simulate", cmd_simulate, "simulated labelers answer over HTTP")
  s.add_argument("--url", default="http://127.0.0.1:8000")
  s.add_argument("--users", required=True,
                 help="name:password,... (labeler i = default_labelers()[i])")
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--max-tasks", type=int, default=100000)
  return p


def main(argv=None):
  args = parser().parse_args(argv)
  try:
    args.fn(args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
