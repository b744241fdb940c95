"""The demo's one page (``python -m tornsession.demo``): a Tornado template, autoescaped (every
``{{ }}`` is HTML-escaped, the login name included), with its stylesheet inline; and the words
that say what each step proves. No build step, no external assets; one small script, which only
adds a line and whose absence the page says."""

from __future__ import annotations

from typing import Any, NamedTuple

import tornado.template

#: What each step proves, shown next to it (and in the notice after it is done).
PROVES = {
    "login": (
        "login regenerates the id: a cookie planted in your browser before login (session "
        "fixation) opens nothing after"
    ),
    "contents": (
        "the data lives in the store, the browser holds only the id: the visits count survives "
        "page loads, and restarts of the demo with the same folder"
    ),
    "contents_sealed": (
        "the data travels sealed in the cookie: your browser carries it but can neither read "
        "nor change it, and the server keeps nothing"
    ),
    "cookies": (
        "HttpOnly keeps the session cookies from page scripts: a script injected into this page "
        "could not read them, so it could not steal the session"
    ),
    "store": (
        "a visitor who has not logged in costs nothing: no record and no session cookie until "
        "something is put in the session"
    ),
    "end": (
        "end this one removes the other browser's session: its next request starts fresh, "
        "logged out"
    ),
    "end-none": (
        "a session is ended only from its owner's own list: one ended already, or anybody "
        "else's, ends nothing"
    ),
    "others": (
        "everywhere else ends every other session of yours and keeps this one: the other "
        "browsers' next requests start fresh, this one stays logged in"
    ),
    "logout": (
        "logout leaves nothing behind: the record is deleted and the cookies cleared, so the "
        "old cookie opens nothing"
    ),
}


class Notice(NamedTuple):
    """What the last step did, shown at the top of the page after its redirect."""

    step: str
    text: str


class CookieRow(NamedTuple):
    name: str
    size: int
    role: str
    flags: list[str]


class SessionRow(NamedTuple):
    hashed_id: str
    label: str
    started: str
    last_seen: str
    current: bool


STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d2330; background: #fafaf7; }
h1 { margin-bottom: 0; } h2 { margin: 0 0 .5rem; font-size: 1.15rem; }
.lede { color: #4a5160; margin-top: .25rem; }
section { background: #fff; border: 1px solid #dcdfe5; border-radius: 8px;
          padding: 1rem 1.25rem; margin: 1rem 0; }
.notice { border-color: #7aa874; background: #f1f8ef; }
.proves { margin: .75rem 0 0; padding-left: .75rem; border-left: 3px solid #7aa874;
          color: #35513a; font-size: .93rem; }
.proves::before { content: "What this proves: "; font-weight: 600; }
.note { color: #4a5160; font-size: .93rem; }
pre, code { font: 14px/1.4 ui-monospace, monospace; }
pre { background: #f3f4f7; padding: .75rem; border-radius: 6px; overflow-x: auto; margin: 0; }
table { border-collapse: collapse; width: 100%; font-size: .93rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e6e8ec;
         vertical-align: top; }
.flag { display: inline-block; margin: 0 .25rem .2rem 0; padding: 0 .4rem;
        border-radius: 4px; background: #eef1f8; font: 13px ui-monospace, monospace; }
ul.list { padding-left: 1.2rem; } ul.list li { margin: .35rem 0; }
li.current { font-weight: 600; }
form { display: inline; } .actions { margin: .75rem 0 0; }
button { font: inherit; padding: .25rem .8rem; border-radius: 6px; border: 1px solid #8a93a6;
         background: #fff; cursor: pointer; }
button:hover { background: #eef1f8; }
input { font: inherit; padding: .25rem .5rem; border-radius: 6px; border: 1px solid #8a93a6; }
"""

# Single-quoted attributes throughout (the tests read the page's HTML as well as its text).
PAGE = """<!doctype html>
<html lang='en'><head><meta charset='utf-8'>
<meta name='viewport' content='width=device-width, initial-scale=1'>
<title>tornsession demo</title><link rel='icon' href='data:,'><style>{% raw style %}</style></head>
<body>
<h1>tornsession demo</h1>
<p class='lede' id='about'>tornsession keeps a Tornado app's sessions in a store of your choice
(files, SQLite, Redis, memcached, or sealed in the cookie itself), with the hard parts in Rust:
the browser holds only a signed id.</p>
<p class='lede'>This page is a session you can watch: log in (the id changes), see what the
session holds, which cookies your browser keeps for it and with which flags, where it is stored,
your sessions in other browsers (end one, or all the others), and log out.</p>

{% for notice in notices %}
<section class='notice' id='notice-{{ notice.step }}'><p>{{ notice.text }}</p>
<p class='proves'>{{ proves[notice.step] }}</p></section>
{% end %}

{% if user is None %}
<section id='start'><h2>Log in</h2>
{% if dead_cookie %}
<p id='fresh'>Your browser sent a session cookie, but it opens no session here (ended from
another browser, logged out, or expired): this request started fresh, and nothing is stored.</p>
{% end %}
<p>Give any name: there is no password, the name only marks whose sessions are whose.</p>
<form method='post' action='/login'>{% module xsrf_form_html() %}
<input name='name' id='name' placeholder='your name' autofocus>
<button id='login'>Log in</button></form>
<p class='proves'>{{ proves["login"] }}</p></section>
{% else %}
<section id='you'><h2>Logged in</h2>
<p id='greeting'>Hello, {{ user }}!</p>
<p id='visits'>Visits: {{ visits }}</p>
<p>Session id: <code id='id-prefix'>{{ id_prefix }}</code>&hellip; (its first 8 hex digits, so
you can see it change at login). The full id is what the session cookie carries: whoever has it
is you to this server, so it must stay secret and is never shown on a page or written to a
log.</p>
<p class='proves'>{{ proves["login"] }}</p></section>
{% end %}

<section id='contents-section'><h2>The session's contents</h2>
<pre id='contents'>{{ contents }}</pre>
{% if user is None %}
<p class='note'>Empty: you have not logged in, so nothing is stored and no session cookie is
set.</p>
{% else %}
<p class='note'>The dict as it is saved at the end of this request (<code>visits</code> already
counts this one). The owner, <code id='owner'>{{ user_id }}</code>, is set with
<code>set_user()</code>; the browser names under &ldquo;Your sessions&rdquo; are what
<code>set_info()</code> attached at login.</p>
{% end %}
<p class='proves'>{{ proves["contents_sealed" if sealed else "contents"] }}</p></section>

<section id='cookies-section'><h2>Your cookies</h2>
{% if cookies %}
<table id='cookies'><thead><tr><th>cookie</th><th>size</th><th>what it is</th>
<th>flags this server sets on it</th></tr></thead><tbody>
{% for cookie in cookies %}
<tr class='cookie' id='cookie-{{ cookie.name }}'><td><code>{{ cookie.name }}</code></td>
<td class='size'>{{ cookie.size }} byte{{ "" if cookie.size == 1 else "s" }}</td>
<td>{{ cookie.role }}</td>
<td>{% for flag in cookie.flags %}<span class='flag'>{{ flag }}</span>{% end %}</td></tr>
{% end %}
</tbody></table>
{% else %}
<p id='no-cookies'>Your browser sent no cookies with this request.</p>
{% end %}
<p class='note'>Names and sizes (of the values) are those your browser sent with this request.
A browser never sends a cookie's flags back: the flags are the attributes of this server's
<code>Set-Cookie</code> lines, the session manager's cookie options. HttpOnly cookies are
invisible to the page's scripts, which is the point. Page script sees these cookies:
<output id='script-sees'>(this line needs JavaScript)</output>.</p>
<script>
document.getElementById('script-sees').textContent =
  document.cookie.split('; ').filter(Boolean).map(function (c) { return c.split('=')[0]; })
    .join(', ') || 'none';
</script>
<p class='proves'>{{ proves["cookies"] }}</p></section>

<section id='store-section'><h2>Where it is stored</h2>
<p>The store: <code id='store'>{{ store }}</code></p>
<p id='record'>{{ record }}</p>
<p class='proves'>{{ proves["store"] }}</p></section>

{% if user is not None %}
<section id='sessions-section'><h2>Your sessions</h2>
{% if sessions is None %}
<p id='sealed'>Your session lives sealed in your cookie: nothing about it is kept on the
server, so it cannot be listed here (<code>user_sessions()</code> needs a store that keeps
the sessions). &ldquo;Log out everywhere else&rdquo; still works: the store keeps a counter
per user, and moving it on revokes every cookie sealed before, but this one, resealed.</p>
{% else %}
<p class='note'>Every session <code>{{ user_id }}</code> owns, from
<code>manager.user_sessions()</code>, each marked by the end of its hashed id (safe to show:
it names a session to <code>destroy_session()</code> but opens nothing, unlike the cookie).</p>
<ul class='list' id='sessions'>
{% for row in sessions %}
{% if row.current %}
<li class='session current'>#{{ row.hashed_id[-8:] }} {{ row.label }}, since {{ row.started }}
(this browser)</li>
{% else %}
<li class='session'>#{{ row.hashed_id[-8:] }} {{ row.label }}, since {{ row.started }},
last seen in the minute of {{ row.last_seen }}
<form method='post' action='/sessions/end'>{% module xsrf_form_html() %}<input type='hidden'
name='id' value='{{ row.hashed_id }}'><button class='end'>End this one</button></form></li>
{% end %}
{% end %}
</ul>
<p class='proves'>{{ proves["end"] }}</p>
{% end %}
<div class='actions'><form method='post' action='/sessions/others'>
{% module xsrf_form_html() %}<button id='others'>Log out everywhere else</button></form></div>
<p class='proves'>{{ proves["others"] }}</p></section>

<section id='logout-section'><h2>Log out</h2>
<form method='post' action='/logout'>{% module xsrf_form_html() %}
<button id='logout'>Log out</button></form>
<p class='proves'>{{ proves["logout"] }}</p></section>
{% end %}

<p class='note' id='csrf'>Every form here carries Tornado's <code>_xsrf</code> token
(<code>xsrf_cookies=True</code>): a form posted to this demo from another site is refused
(403).</p>
</body></html>
"""


def template_loader() -> tornado.template.DictLoader:
    """The app's ``template_loader``: the page, under the name the handlers render."""
    return tornado.template.DictLoader({"page.html": PAGE})


def page_arguments(**arguments: Any) -> dict[str, Any]:
    """The template's namespace: the handler's ``arguments`` with the stylesheet and the
    proves lines."""
    return {"style": STYLE, "proves": PROVES, **arguments}
