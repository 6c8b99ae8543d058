"""Command line: python3 -m websearch fetch URL | search QUERY [--max-results N].

Prints one JSON object on stdout; on failure exits 2 and prints {"error": {"code", "message"}}.
"""

import argparse
import json
import sys

from . import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, WebsearchError, fetch, search


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise WebsearchError("invalid_argument", message)


def main(argv=None):
    parser = _Parser(prog="python3 -m websearch", description="Fetch a web page or search the web through the host.")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="fetch URL: status, final URL, title, text, links")
    f.add_argument("url")
    f.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    f.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    s = sub.add_parser("search", help="web search through the host's provider")
    s.add_argument("query")
    s.add_argument("--max-results", type=int, default=5)
    try:
        args = parser.parse_args(argv)
        if args.command == "fetch":
            result = fetch(args.url, max_bytes=args.max_bytes, timeout=args.timeout)
        else:
            result = search(args.query, max_results=args.max_results)
    except WebsearchError as e:
        print(json.dumps(e.to_dict()))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
