"""``python -m db roster ...`` and ``python -m db persons ...``: the roster and person corrections from the shell.

The command line acts as a study owner (whoever runs it can open the database), and records every change with the
name given by ``--who`` and the time, through the same services as the app (:mod:`db.roster_services`,
:class:`db.services.LabelStore`). Bad CSV is refused whole with line numbers: exit status 1, nothing changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.settings import Settings
from db import roster_services as rs
from db.roster import RosterError
from db.services import LabelStore


def _who(args: argparse.Namespace) -> str:
    name = (args.who or "").strip()
    if not name:
        raise RosterError("--who", ["give your name with --who: every change is recorded with who made it"])
    return name


def _cmd_roster(args: argparse.Namespace, settings: Settings) -> int:
    store = LabelStore.from_settings(settings)
    try:
        if args.action == "import":
            n = rs.import_roster(store, args.study, Path(args.file), owner=True)
            print(f"study {args.study!r}: {n} participants imported")
        elif args.action == "expect":
            n = rs.import_expected(store, args.study, Path(args.file), owner=True)
            print(f"study {args.study!r}: {n} expected participants set")
        elif args.action == "assign":
            n = rs.import_assignments(store, args.study, Path(args.file), _who(args), owner=True)
            print(f"study {args.study!r}: {n} persons assigned")
        elif args.action == "remember":
            n = rs.remember(store, args.study, args.media_id, _who(args), owner=True)
            print(f"recording {args.media_id}: {n} persons assigned as in earlier recordings")
        else:
            r = rs.recording_roster(store, args.study, args.media_id)
            print(f"recording {args.media_id}: {r.n_expected} expected")
            for row in r.rows:
                people = ",".join(f"person {p}" for p in row.person_ids)
                print(f"{row.participant}\t{row.name}\t{row.group or ''}\t{row.reason}\t{people}")
    finally:
        store.close()
    return 0


def _cmd_persons(args: argparse.Namespace, settings: Settings) -> int:
    store = LabelStore.from_settings(settings)
    try:
        if args.action == "list":
            for p in store.classroom.persons(args.media_id):
                tracks = ",".join(map(str, p.track_indexes))
                print(f"{p.person_id}\t{p.label}\ttracks {tracks}\t{p.n_faces} faces\t{p.start_s}-{p.end_s} s")
            return 0
        who = _who(args)
        if args.action == "rename":
            store.classroom.rename_person(args.person_id, args.participant, who, owner=True)
        elif args.action == "merge":
            store.classroom.merge_persons(args.person_id, args.other_person_id, who, owner=True)
        elif args.at is None:
            store.classroom.split_track(args.track_id, who, owner=True)
        else:
            store.classroom.split_track_at(args.track_id, args.at, who, owner=True)
        print(f"{args.action} recorded for {who}")
    finally:
        store.close()
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``roster`` and ``persons`` to the ``python -m db`` parser."""
    q = sub.add_parser("roster", help="a study's participants, expected lists and person assignments")
    acts = q.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, columns in (
        ("import", "participant,name,group"),
        ("expect", "recording,participant"),
        ("assign", "recording,person,participant"),
    ):
        a = acts.add_parser(name, help=f"import a CSV with the columns {columns} (all or nothing)")
        a.add_argument("study")
        a.add_argument("file", metavar="FILE.csv")
        a.add_argument("--who", help="your name, recorded with the assignments")
    for name, what in (("remember", "assign persons as in earlier recordings"), ("show", "every participant's row")):
        a = acts.add_parser(name, help=what)
        a.add_argument("study")
        a.add_argument("media_id", type=int)
        a.add_argument("--who", help="your name, recorded with the assignments")
    q.set_defaults(fn=_cmd_roster)

    q = sub.add_parser("persons", help="list, rename, merge or split the persons of a recording (recorded)")
    acts = q.add_subparsers(dest="action", required=True, metavar="ACTION")
    acts.add_parser("list", help="the current persons").add_argument("media_id", type=int)
    a = acts.add_parser("rename", help="give a person a participant id (empty: none)")
    a.add_argument("person_id", type=int)
    a.add_argument("participant")
    a = acts.add_parser("merge", help="move every track of OTHER into PERSON")
    a.add_argument("person_id", type=int)
    a.add_argument("other_person_id", type=int)
    a = acts.add_parser("split", help="move a track (or, with --at, its faces from a time on) to a new person")
    a.add_argument("track_id", type=int, help="the track's database id")
    a.add_argument("--at", type=float, default=None, help="seconds: split the track at this time")
    for a in acts.choices.values():
        a.add_argument("--who", help="your name, recorded with the change")
    q.set_defaults(fn=_cmd_persons)
