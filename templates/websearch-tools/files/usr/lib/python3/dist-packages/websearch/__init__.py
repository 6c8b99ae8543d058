"""Web fetch and search for SandboxVM's websearch-tools sandbox (standard library only).

The sandbox has no network device. Every request goes through the guest agent's HTTP proxy
(HTTP_PROXY / HTTPS_PROXY), which carries it to the host; the host resolves the name, applies the
template's egress policy and only then connects. Pages are parsed here, inside the sandbox.

    fetch(url) -> {"status", "url", "final_url", "content_type", "title", "text", "links",
                   "truncated", "bytes"}
    search(query, max_results=5) -> {"results": [{"title", "url", "snippet"}]}

Failures raise WebsearchError with .code one of: egress_denied (then .reason is the egress reason
code, e.g. private_address), fetch_failed, too_large, timeout, search_not_configured,
search_failed, invalid_argument.
"""

import html.parser
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["fetch", "search", "WebsearchError", "extract"]

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_TIMEOUT = 20.0
MAX_REDIRECTS = 5
MAX_LINKS = 500
SEARCH_HOST = "search.sandboxvm.internal"
REASON_HEADER = "X-SandboxVM-Egress-Reason"
USER_AGENT = "SandboxVM-websearch/1.0"

_POLICY_DENIALS = {
    "invalid_request", "denied_by_rule", "metadata_endpoint", "private_address",
    "port_not_allowed", "not_in_allow_list",
}


class WebsearchError(Exception):
    """A failed fetch or search. code: see the module docstring; reason: the egress reason code, if any."""

    def __init__(self, code, message, reason=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def to_dict(self):
        err = {"code": self.code, "message": self.message}
        if self.reason:
            err["reason"] = self.reason
        return {"error": err}


# ---------------------------------------------------------------------------------------------
# HTML to text


_SKIP = {"script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside",
         "form", "iframe", "head", "select", "button"}
_BLOCK = {"p", "div", "section", "article", "main", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4",
          "h5", "h6", "tr", "table", "pre", "blockquote", "dd", "dt", "dl", "hr", "figure",
          "figcaption", "td", "th", "address", "details", "summary"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
         "source", "track", "wbr"}


class _Extractor(html.parser.HTMLParser):
    def __init__(self, base_url):
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.title = None
        self._title_parts = None
        self._skip_stack = []
        self._parts = []
        self.links = []
        self._seen = set()
        self._link = None  # [href, text parts]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "base" and attrs.get("href") and not self.links:
            self.base_url = urllib.parse.urljoin(self.base_url, attrs["href"].strip())
        if tag == "title" and self.title is None:
            self._title_parts = []
            return
        if tag in _SKIP and tag not in _VOID:
            self._skip_stack.append(tag)
            return
        if self._skip_stack:
            return
        if tag in _BLOCK:
            self._parts.append("\n")
        if tag == "a" and attrs.get("href"):
            self._close_link()
            self._link = [attrs["href"].strip(), []]

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCK and not self._skip_stack:
            self._parts.append("\n")
        if tag == "base":
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "title" and self._title_parts is not None:
            self.title = _squash("".join(self._title_parts)) or None
            self._title_parts = None
            return
        if self._skip_stack:
            if tag in self._skip_stack:
                while self._skip_stack and self._skip_stack.pop() != tag:
                    pass
            return
        if tag == "a":
            self._close_link()
        if tag in _BLOCK:
            self._parts.append("\n")

    def handle_data(self, data):
        if self._title_parts is not None:
            self._title_parts.append(data)
            return
        if self._skip_stack:
            return
        self._parts.append(data)
        if self._link is not None:
            self._link[1].append(data)

    def _close_link(self):
        if self._link is None:
            return
        href, parts = self._link
        self._link = None
        if len(self.links) >= MAX_LINKS or href.startswith("#"):
            return
        url = urllib.parse.urljoin(self.base_url, href)
        url, _frag = urllib.parse.urldefrag(url)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https") or url in self._seen:
            return
        self._seen.add(url)
        self.links.append({"url": url, "text": _squash("".join(parts))})

    def result(self):
        self._close_link()
        lines = (_squash(line) for line in "".join(self._parts).split("\n"))
        text = "\n".join(line for line in lines if line)
        return self.title, text, self.links


def _squash(s):
    return re.sub(r"\s+", " ", s).strip()


def extract(markup, base_url):
    """(title, main text, links) of an HTML document; links are absolute http(s) URLs."""
    parser = _Extractor(base_url)
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient; anything it still chokes on ends the parse there
        pass
    return parser.result()


# ---------------------------------------------------------------------------------------------
# HTTP


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS
    max_repeats = MAX_REDIRECTS


DEFAULT_PROXY = "http://127.0.0.1:3128"


def _opener():
    # HTTP_PROXY/HTTPS_PROXY (the template sets them) point at the guest agent's proxy; without them
    # the agent's default address is used, so callers that clear the environment still get out.
    proxies = urllib.request.getproxies() or {"http": DEFAULT_PROXY, "https": DEFAULT_PROXY}
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies), _Redirects())


def _check_url(url):
    if not isinstance(url, str) or not url.strip():
        raise WebsearchError("invalid_argument", "url must be a non-empty string")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebsearchError("invalid_argument", f"not an http(s) URL: {url!r}")
    return url.strip()


def _proxy_refusal(status, reason_code, message):
    if reason_code in _POLICY_DENIALS or status == 403:
        return WebsearchError("egress_denied", message, reason_code)
    if reason_code == "connect_timeout" or status == 504:
        return WebsearchError("timeout", message, reason_code)
    return WebsearchError("fetch_failed", message, reason_code)


_TUNNEL = re.compile(r"Tunnel connection failed: (\d+) .*?\[([a-z_]+)\] ?(.*)", re.S)


def _from_exception(e, url, timeout):
    """Maps what urllib raises to a WebsearchError."""
    if isinstance(e, WebsearchError):
        return e
    if isinstance(e, urllib.error.HTTPError) and e.headers.get(REASON_HEADER):
        body = e.read(65536).decode("utf-8", "replace").strip()
        return _proxy_refusal(e.code, e.headers.get(REASON_HEADER), body or str(e))
    if isinstance(e, urllib.error.HTTPError) and e.code in (301, 302, 303, 307, 308):
        return WebsearchError("fetch_failed", f"too many redirects (more than {MAX_REDIRECTS}) from {url}")
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    text = str(reason)
    m = _TUNNEL.search(text)
    if m:
        return _proxy_refusal(int(m.group(1)), m.group(2), m.group(3).strip() or text)
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in text:
        return WebsearchError("timeout", f"no answer from {url} within {timeout:g} s")
    return WebsearchError("fetch_failed", f"{url}: {text}")


def _charset(content_type, head):
    m = re.search(r"charset=([\w.:-]+)", content_type or "", re.I)
    if not m:
        m = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", head[:4096], re.I)
        if m:
            return m.group(1).decode("ascii", "replace")
        return "utf-8"
    return m.group(1)


def fetch(url, max_bytes=DEFAULT_MAX_BYTES, timeout=DEFAULT_TIMEOUT):
    """Fetches url (following at most 5 redirects) and extracts title, text and links.

    Reads at most max_bytes of the body (then "truncated" is true) within timeout seconds in all.
    HTTP error statuses (404, 500, ...) are results, not exceptions.
    """
    url = _check_url(url)
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise WebsearchError("invalid_argument", "max_bytes must be a positive integer")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise WebsearchError("invalid_argument", "timeout must be a positive number")
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.8",
                                                   "Accept-Encoding": "identity"})
    try:
        response = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.headers.get(REASON_HEADER) or e.code in (301, 302, 303, 307, 308):
            raise _from_exception(e, url, timeout) from None
        response = e  # an error page is still a page
    except Exception as e:  # URLError, OSError, timeouts, http.client errors
        raise _from_exception(e, url, timeout) from None

    with response:
        status = response.status if hasattr(response, "status") else response.code
        final_url = response.geturl()
        content_type = response.headers.get("Content-Type", "") or ""
        chunks, total, truncated = [], 0, False
        try:
            while True:
                if time.monotonic() > deadline:
                    raise WebsearchError("timeout", f"{url} did not finish within {timeout:g} s")
                chunk = response.read(min(65536, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    truncated = True
                    break
        except WebsearchError:
            raise
        except Exception as e:
            raise _from_exception(e, url, timeout) from None
    body = b"".join(chunks)[:max_bytes]
    mime = content_type.split(";")[0].strip().lower()
    title, text, links = None, "", []
    if mime in ("text/html", "application/xhtml+xml") or (not mime and body.lstrip()[:1] == b"<"):
        markup = body.decode(_charset(content_type, body), "replace")
        title, text, links = extract(markup, final_url)
    elif mime.startswith("text/") or mime in ("application/json", "application/xml") or mime.endswith("+json") or mime.endswith("+xml"):
        text = body.decode(_charset(content_type, body), "replace")
    return {
        "status": status,
        "url": url,
        "final_url": final_url,
        "content_type": content_type,
        "title": title,
        "text": text,
        "links": links,
        "truncated": truncated,
        "bytes": len(body),
    }


def search(query, max_results=5, timeout=30.0):
    """Web search through the host's search provider (its keys never enter the sandbox)."""
    if not isinstance(query, str) or not query.strip():
        raise WebsearchError("invalid_argument", "query must be a non-empty string")
    if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 50:
        raise WebsearchError("invalid_argument", "max_results must be an integer from 1 to 50")
    qs = urllib.parse.urlencode({"q": query, "max_results": max_results})
    request = urllib.request.Request(f"http://{SEARCH_HOST}/search?{qs}", headers={"User-Agent": USER_AGENT})
    try:
        with _opener().open(request, timeout=timeout) as response:
            data = json.loads(response.read(4 * 1024 * 1024))
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read(65536)).get("error", {})
        except Exception:
            err = {}
        code = err.get("code") or "search_failed"
        if code not in ("search_not_configured", "search_failed", "invalid_argument"):
            code = "search_failed"
        raise WebsearchError(code, err.get("message") or str(e)) from None
    except Exception as e:
        err = _from_exception(e, "search", timeout)
        raise WebsearchError("timeout" if err.code == "timeout" else "search_failed", err.message) from None
    results = [{"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("snippet", "")}
               for r in data.get("results", [])]
    return {"results": results}
