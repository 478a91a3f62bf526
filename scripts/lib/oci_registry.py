"""scripts/lib/oci_registry.py: the OCI distribution API client that scripts/push-image and
scripts/sign-image share. Python 3 standard library only (urllib). Imported (push-image puts
scripts/lib on sys.path), or run for one question:

  python3 scripts/lib/oci_registry.py platforms REGISTRY/REPO@sha256:DIGEST [--plain-http | --https]

prints the image index's platform manifests, one `OS/ARCH[/VARIANT] sha256:...` a line
(scripts/sign-image attaches each platform's SBOM to its manifest with it).

Transport: loopback registries (127.0.0.1, [::1], localhost) are spoken to over plain HTTP and
never through a proxy (HTTP(S)_PROXY apply to the others), all others over verified HTTPS,
unless told otherwise.

Authentication, the way Docker clients do it, with the logins scripts/registry-login stores in
the Docker client configuration ($DOCKER_CONFIG/config.json, default ~/.docker/config.json):
`auths[REGISTRY]` with `auth` (base64 of USER:PASSWORD) or `username` and `password`. Credential
helpers (`credsStore`, `credHelpers`) are not consulted: log in with scripts/registry-login.
Requests go out anonymously until the registry answers 401 with a `WWW-Authenticate`
challenge (RFC 7235):
  - `Basic`: every later request to the registry carries the login as Basic credentials;
  - `Bearer realm=...,service=...`: a token from `GET realm?service=...&scope=repository:REPO:ACTIONS`
    (with the login as Basic credentials when there is one, anonymously otherwise), the JSON's
    `token` or `access_token`, sent as `Authorization: Bearer` on every later request; when the
    registry refuses it later (expired), one new challenge and token.
A 401 with no login stored, or after authenticating, is an error naming the registry and
`scripts/registry-login`. Credentials go only to the registry's own scheme://host:port (and to
a token realm on that host or over HTTPS): never to upload locations or redirects elsewhere
(blob storage), and never into messages.
"""

import base64
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class Failure(Exception):
    pass


def die(message):
    raise Failure(message)


def parse_reference(reference):
    """REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:... -> (registry, repo, tag or digest)."""
    registry, slash, rest = reference.partition("/")
    if not slash or not rest:
        die(f"{reference}: expected REGISTRY/REPO:TAG, e.g. 127.0.0.1:5000/secret-inject:0.1.0")
    repo, at, digest = rest.partition("@")
    if at:
        if not DIGEST.fullmatch(digest):
            die(f"{digest}: not a sha256 digest")
        tag = digest
    else:
        repo, colon, tag = rest.rpartition(":")
        if not colon or "/" in tag:
            repo, tag = rest, "latest"
        if not TAG.fullmatch(tag):
            die(f"{tag}: not a valid tag")
    if not REPOSITORY.fullmatch(repo):
        die(f"{repo}: not a valid repository name (lower case, digits, . _ - /)")
    return registry, repo, tag


def base_url(registry, plain_http=False, https=False):
    """The registry's scheme://host[:port]: plain HTTP on loopback unless told otherwise."""
    host = registry[: registry.find("]") + 1] if registry.startswith("[") else registry.rsplit(":", 1)[0]
    plain = plain_http or (not https and host in LOOPBACK)
    return ("http://" if plain else "https://") + registry


def docker_config_path():
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def stored_login(registry):
    """(user, password) that the Docker config holds for `registry`, or None."""
    path = docker_config_path()
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        die(f"{path}: cannot read the Docker config: {error}")
    for key, entry in (config.get("auths") or {}).items():
        # Keys are host[:port], sometimes written as a URL (https://host/v1/).
        name = key.split("://", 1)[-1].split("/", 1)[0]
        if name != registry or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, colon, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                die(f"{path}: the login for {registry} is not base64 of USER:PASSWORD")
            if colon and user and password:
                return user, password
        if entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
    return None


TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
PARAM = re.compile(rf'({TOKEN})[ \t]*=[ \t]*({TOKEN}|"(?:[^"\\]|\\.)*")', re.S)
TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
SCHEME = re.compile(rf"({TOKEN})(?:[ \t]+(.*))?", re.S)


def _comma_items(value):
    """A header value split at the commas outside quoted strings."""
    items, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_challenges(values):
    """RFC 7235 `WWW-Authenticate` header values -> [(scheme lower-cased, {param: value})].
    Parameter names are lower-cased, values are tokens or quoted strings (unescaped); a token68
    is kept as {"": token68}."""
    challenges = []

    def add(params, item):
        match = PARAM.fullmatch(item)
        if not match:
            return False
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.S)
        params[match.group(1).lower()] = value
        return True

    for value in values:
        for item in _comma_items(value):
            if challenges and add(challenges[-1][1], item):
                continue
            match = SCHEME.fullmatch(item)
            if not match:
                continue  # not a challenge: ignored, as clients do
            params, rest = {}, (match.group(2) or "").strip()
            challenges.append((match.group(1).lower(), params))
            if rest and not add(params, rest) and TOKEN68.fullmatch(rest):
                params[""] = rest
    return challenges


def origin(url):
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def opener_for(url):
    """urllib's opener for requests to `url`'s origin: redirects keep the Authorization header
    only within that origin; loopback is never sent through a proxy (as Go's net/http does)."""
    handlers = [_Redirects(origin(url))]
    host = urllib.parse.urlsplit(url).netloc.rsplit("@", 1)[-1]
    host = host[: host.find("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
    if host in LOOPBACK:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping the Authorization header when one leaves the registry's origin."""

    def __init__(self, keep_origin):
        self.keep_origin = keep_origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(new.full_url) != self.keep_origin:
            new.remove_header("Authorization")
        return new


class Registry:
    """One repository of one registry; `actions` is the token scope asked for (pull or pull,push)."""

    def __init__(self, registry, repo, base, actions="pull,push"):
        self.registry, self.repo, self.base, self.actions = registry, repo, base, actions
        self.origin = origin(base)
        self.opener = opener_for(base)
        self.login = stored_login(registry)
        self.authorization = None  # the header value once the registry asked for one
        self.scheme = None

    def _fix(self):
        return (
            f"run `scripts/registry-login {self.registry} USER` with the password or token on stdin "
            f"(it stores the login in {docker_config_path()})"
        )

    def _send(self, method, url, data, headers):
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=300) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()
        except urllib.error.URLError as error:
            die(f"{method} {url}: {error.reason}")

    def _basic(self):
        user, password = self.login
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _authenticate(self, head, url):
        """Answer the 401 of a request to `url`: set self.authorization, or fail."""
        challenges = parse_challenges(head.get_all("WWW-Authenticate") or [])
        schemes = dict(reversed(challenges))
        if "bearer" in schemes and schemes["bearer"].get("realm"):
            self.scheme = "bearer"
            self.authorization = "Bearer " + self._token(schemes["bearer"])
        elif "basic" in schemes:
            if not self.login:
                die(f"{self.registry} asks for a login (401 Unauthorized, Basic) and "
                    f"{docker_config_path()} holds none for it: {self._fix()}")
            self.scheme = "basic"
            self.authorization = self._basic()
        else:
            offered = ", ".join(s for s, _ in challenges) or "no WWW-Authenticate challenge"
            die(f"{self.registry}: 401 Unauthorized for {url} with {offered}: only Basic and Bearer "
                "token authentication are spoken here")

    def _token(self, challenge):
        realm = challenge["realm"]
        if origin(realm)[0] not in ("http", "https"):
            die(f"{self.registry}: the Bearer challenge's realm {realm!r} is not an HTTP(S) URL")
        query = {"scope": f"repository:{self.repo}:{self.actions}"}
        if challenge.get("service"):
            query = {"service": challenge["service"], **query}
        separator = "&" if urllib.parse.urlsplit(realm).query else "?"
        url = realm + separator + urllib.parse.urlencode(query)
        headers = {}
        # The login goes to a token service on the registry's host, or to one reached over HTTPS.
        if self.login and (origin(realm)[1] == self.origin[1] or origin(realm)[0] == "https"):
            headers["Authorization"] = self._basic()
        opener = opener_for(realm)
        request = urllib.request.Request(url, headers=headers)
        try:
            with opener.open(request, timeout=300) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                if self.login:
                    die(f"{self.registry} refused the login of {self.login[0]} stored in "
                        f"{docker_config_path()} (the token service answered {error.code}): "
                        f"{self._fix()}")
                die(f"{self.registry} asks for a login (401 Unauthorized, Bearer) and "
                    f"{docker_config_path()} holds none for it: {self._fix()}")
            die(f"the token service of {self.registry} answered HTTP {error.code}")
        except urllib.error.URLError as error:
            die(f"the token service of {self.registry}: {error.reason}")
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            die(f"the token service of {self.registry} answered without a token")
        return token

    def request(self, method, url, data=None, headers=None, ok=(200,)):
        """Send one request, authenticating when the registry asks. `data` is bytes or a file
        (rewound for a retry). Returns (status, headers, body)."""
        if not url.startswith(("http://", "https://")):
            url = urllib.parse.urljoin(self.base, url)
        ours = origin(url) == self.origin
        challenged = False
        while True:
            sent = dict(headers or {})
            if ours and self.authorization:
                sent["Authorization"] = self.authorization
            if hasattr(data, "seek"):
                data.seek(0)
            status, head, body = self._send(method, url, data, sent)
            if status != 401 or not ours:
                break
            if challenged or (self.authorization and self.scheme == "basic"):
                if self.login:
                    die(f"{self.registry} refused the login of {self.login[0]} stored in "
                        f"{docker_config_path()} (401 Unauthorized): {self._fix()}")
                die(f"{self.registry} asks for a login (401 Unauthorized) and "
                    f"{docker_config_path()} holds none for it: {self._fix()}")
            # First challenge, or the token expired: (re)authenticate once, then retry.
            challenged = True
            self._authenticate(head, url)
        if status == 401:
            die(f"{method} {url}: 401 Unauthorized (outside {self.registry}: sent without credentials)")
        if status == 403:
            who = f"the login of {self.login[0]}" if self.login else "an anonymous client"
            die(f"{self.registry} denied {method} {urllib.parse.urlsplit(url).path} to {who} "
                f"(403): the login needs {self.actions} access to {self.repo}: {self._fix()}")
        if status not in ok:
            die(f"{method} {url}: HTTP {status}: {body[:2000].decode(errors='replace')}")
        return status, head, body

    def has_blob(self, digest):
        status, _, _ = self.request("HEAD", f"/v2/{self.repo}/blobs/{digest}", ok=(200, 404))
        return status == 200

    def push_blob(self, path, digest, size):
        _, head, _ = self.request("POST", f"/v2/{self.repo}/blobs/uploads/", ok=(202,))
        location = head.get("Location")
        if not location:
            die("the registry answered the upload POST without a Location")
        location = urllib.parse.urljoin(self.base, location)
        separator = "&" if urllib.parse.urlparse(location).query else "?"
        url = f"{location}{separator}digest={urllib.parse.quote(digest)}"
        with open(path, "rb") as body:
            self.request(
                "PUT",
                url,
                data=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                ok=(201,),
            )

    def push_manifest(self, reference, data, media_type):
        _, head, _ = self.request(
            "PUT",
            f"/v2/{self.repo}/manifests/{reference}",
            data=data,
            headers={"Content-Type": media_type, "Content-Length": str(len(data))},
            ok=(201,),
        )
        return head.get("Docker-Content-Digest")

    def get_manifest(self, reference):
        """(media type, bytes) of a manifest or index."""
        accept = ", ".join([MEDIA_INDEX, MEDIA_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
        _, head, body = self.request(
            "GET", f"/v2/{self.repo}/manifests/{reference}", headers={"Accept": accept}
        )
        media_type = (head.get("Content-Type") or "").split(";")[0].strip()
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except ValueError:
            die(f"{self.registry}/{self.repo}:{reference}: the manifest is not JSON")
        return media_type, body


def platforms(client, digest):
    """[(os/arch[/variant], digest)] of the image index `digest`, checked against its digest."""
    media_type, body = client.get_manifest(digest)
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        die(f"{client.registry}/{client.repo}@{digest}: the registry served other bytes")
    if media_type not in (MEDIA_INDEX, DOCKER_LIST):
        die(f"{client.registry}/{client.repo}@{digest} is a {media_type or 'manifest'}, not an image index")
    found = []
    for entry in json.loads(body).get("manifests", []):
        platform = entry.get("platform") or {}
        if not platform.get("os") or not platform.get("architecture"):
            continue  # attestation manifests and the like
        name = f"{platform['os']}/{platform['architecture']}"
        if platform.get("variant"):
            name += "/" + platform["variant"]
        found.append((name, entry["digest"]))
    return found


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/lib/oci_registry.py")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("platforms", help="the platform manifests of an image index")
    listing.add_argument("reference", help="REGISTRY/REPO@sha256:DIGEST of an image index")
    scheme = listing.add_mutually_exclusive_group()
    scheme.add_argument("--plain-http", action="store_true")
    scheme.add_argument("--https", action="store_true")
    options = parser.parse_args(argv)
    try:
        registry, repo, digest = parse_reference(options.reference)
        if not DIGEST.fullmatch(digest):
            die(f"{options.reference}: name the index by digest (REGISTRY/REPO@sha256:...)")
        client = Registry(registry, repo, base_url(registry, options.plain_http, options.https), "pull")
        for name, manifest in platforms(client, digest):
            print(name, manifest)
    except Failure as failure:
        print(f"scripts/lib/oci_registry.py: ERROR: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
