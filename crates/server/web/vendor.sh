#!/usr/bin/env bash
# Re-fetches the web page's third-party scripts into web/vendor/: exactly the pinned versions
# below, from the npm registry (`npm pack`, which checks each tarball's integrity), with their
# licenses. The results are committed and embedded in the binary, so building hearth needs
# neither npm nor the network. Run it after changing a version, then commit web/vendor/.
#
#   crates/server/web/vendor.sh
set -euo pipefail
cd "$(dirname "$0")"

MARKED=18.2.1      # markdown → HTML
DOMPURIFY=3.4.18   # HTML sanitizer (Apache-2.0 or MPL-2.0)
HLJS=11.12.0       # syntax highlighting: the common-languages browser build and two themes

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" "@highlightjs/cdn-assets@$HLJS" >/dev/null)
for pkg in "marked-$MARKED" "dompurify-$DOMPURIFY" "highlightjs-cdn-assets-$HLJS"; do
  mkdir -p "$tmp/$pkg"
  tar -xzf "$tmp/$pkg.tgz" -C "$tmp/$pkg"
done

out=vendor
rm -rf "$out"
mkdir -p "$out"
# Copies a file without its source-map comment (the maps are not shipped).
copy() { # from to
  sed -e '/^\/\/# sourceMappingURL=/d' -e '/^\/\*# sourceMappingURL=.*\*\/$/d' "$1" >"$out/$2"
}
copy "$tmp/marked-$MARKED/package/lib/marked.umd.js" marked.umd.js
cp "$tmp/marked-$MARKED/package/LICENSE" "$out/LICENSE.marked"
copy "$tmp/dompurify-$DOMPURIFY/package/dist/purify.min.js" purify.min.js
cp "$tmp/dompurify-$DOMPURIFY/package/LICENSE" "$out/LICENSE.dompurify"
hl="$tmp/highlightjs-cdn-assets-$HLJS/package"
copy "$hl/highlight.min.js" highlight.min.js
copy "$hl/styles/github.min.css" hljs-light.min.css
copy "$hl/styles/github-dark.min.css" hljs-dark.min.css
cp "$hl/LICENSE" "$out/LICENSE.highlightjs"
cat >"$out/VERSIONS" <<VERSIONS
marked $MARKED (lib/marked.umd.js)
dompurify $DOMPURIFY (dist/purify.min.js)
@highlightjs/cdn-assets $HLJS (highlight.min.js, styles/github.min.css, styles/github-dark.min.css)
VERSIONS
(cd "$out" && sha256sum -- *.js *.css >SHA256SUMS)
echo "vendored into $(pwd)/$out:" >&2
cat "$out/VERSIONS" >&2
