"""A seeded mix of Bluesky records in JSON form, in network proportions (lexicon benchmark input).

:func:`record_mix` returns ``(nsid, record)`` pairs: about 35% ``app.bsky.feed.post``,
45% ``app.bsky.feed.like``, 15% ``app.bsky.graph.follow`` and 5% ``app.bsky.feed.repost``
(the exact counts are the rounded shares of ``n``, in a shuffled order). Records are in the
atproto JSON form (``{"$link": ...}`` for CID links, typed blob objects) and valid against the
published lexicons:

- posts vary: plain ASCII text, non-ASCII text (emoji with ZWJ sequences and skin tones,
  accents, CJK, Korean), facets (mentions, links and tags whose ``byteStart``/``byteEnd`` are
  UTF-8 byte offsets into the text), replies (root and parent strong refs), image embeds (1-4
  images with alt text, most with an ``aspectRatio``), external link cards (some with a thumb
  blob), quote posts (``app.bsky.embed.record``), ``recordWithMedia`` (images or a link card),
  a few videos, ``langs`` matching the text, and occasional self-labels;
- likes and reposts carry a strong ref to a post (a few with ``via``), follows a DID (a few
  with ``via`` a starter pack).

Text limits hold by construction: every text has at most 280 code points, so at most 280
graphemes and 1,120 UTF-8 bytes (the limits are 300 and 3,000). DIDs, TIDs, CIDs (dag-cbor for
records, raw for blobs) and timestamps are generated from the seed, so a given ``(n, seed)``
always yields the same records.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from atrepo.core.cid import CID
from atrepo.core.tid import tid_from_parts

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
FOLLOW = "app.bsky.graph.follow"
REPOST = "app.bsky.feed.repost"

#: Network shares of the four collections (they sum to 1).
SHARES: tuple[tuple[str, float], ...] = ((POST, 0.35), (LIKE, 0.45), (FOLLOW, 0.15), (REPOST, 0.05))

MAX_TEXT_CODE_POINTS = 280

_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_START_US = 1_780_000_000_000_000  # 2026-05-28
_SPAN_US = 180 * 86_400_000_000  # six months

_WORD_TEXT = (
    "the a an and or but so just really very new old good great bad little big first last today "
    "tonight morning week weekend year time thing people friend friends team work home city "
    "coffee tea book books music song album film show game games code bug release protocol "
    "server feed post thread photo photos cat dog garden rain snow sun train bike walk run "
    "think know love like want need make made see saw read reading writing wrote try trying "
    "finally again still never always maybe probably honestly"
)
_WORDS = tuple(_WORD_TEXT.split())
_ENDINGS = (".", "!", "?", "...", "", " lol", " 🙂", " 😂", " 🎉", " ✨")
_EMOJI = (
    "😂",
    "❤️",
    "🥲",
    "🙏🏽",
    "👍🏻",
    "👩‍💻",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🧑🏾‍🚀",
    "🐈‍⬛",
    "🇧🇷",
    "🇯🇵",
    "🔥",
    "✨",
)
# (language tag, sentences) for non-English posts
_FOREIGN: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ja",
        ("今日は雪が降りました。", "新しいアルバムを聴いています", "おはようございます☀️", "猫がかわいい🐈"),
    ),
    (
        "pt",
        ("Bom dia, pessoal!", "Que dia lindo em São Paulo", "Alguém já leu esse livro?", "Café é vida ☕"),
    ),
    ("de", ("Schönes Wochenende euch allen!", "Grüße aus München", "Das Wetter ist heute großartig")),
    ("es", ("¿Alguien más está viendo esto?", "Mañana empieza el festival", "Qué buena canción 🎶")),
    ("ko", ("오늘 날씨가 정말 좋네요", "새 앨범 최고예요!", "좋은 아침입니다")),
    ("zh", ("今天天气很好", "大家周末愉快！", "这本书真好看")),
    ("fr", ("Ça fait plaisir de vous lire", "Quelle journée à Montréal !", "Je découvre l'atproto")),
)
_SYLLABLES = ("ka", "ri", "mo", "na", "te", "lu", "so", "vi", "ra", "ben", "ja", "el", "mi", "do", "zo", "an")
_DOMAINS = ("example.com", "news.example.org", "blog.example.net", "video.example.tv", "docs.example.dev")
_TAGS = ("atproto", "art", "bookclub", "photography", "日本", "música")
_LABELS = ("sexual", "nudity", "porn", "graphic-media")
_ALTS = (
    "",
    "A cat asleep on a laptop keyboard",
    "Sunset over the harbour, boats in silhouette",
    "Screenshot of a terminal showing a passing test run",
    "Hand-drawn map of the hiking route",
    "Bowl of ramen with a soft-boiled egg",
    "雪の積もった公園のベンチ",
)


class _Gen:
    """State of one mix: the seeded RNG and the pools of accounts and earlier posts."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.accounts = [self._account(i) for i in range(400)]
        self.posts: list[dict[str, str]] = [self._post_ref(self._pick_account()[0]) for _ in range(300)]

    # -- identifiers ---------------------------------------------------------------------------------
    def _account(self, i: int) -> tuple[str, str]:
        rng = self.rng
        did = "did:plc:" + "".join(rng.choice(_B32) for _ in range(24))
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) + str(i % 10)
        return did, f"{name}.bsky.social"

    def _pick_account(self) -> tuple[str, str]:
        return self.rng.choice(self.accounts)

    def _micros(self) -> int:
        return _START_US + self.rng.randrange(_SPAN_US)

    def tid(self) -> str:
        return tid_from_parts(self._micros(), self.rng.randrange(1024))

    def created_at(self) -> str:
        moment = _EPOCH + timedelta(microseconds=self._micros())
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    def record_cid(self) -> str:
        return str(CID.for_dag_cbor(self.rng.randbytes(48)))

    def blob(self, mime: str, max_size: int) -> dict[str, Any]:
        return {
            "$type": "blob",
            "ref": {"$link": str(CID.for_raw(self.rng.randbytes(32)))},
            "mimeType": mime,
            "size": self.rng.randint(max_size // 50, max_size),
        }

    def _post_ref(self, did: str) -> dict[str, str]:
        return {"uri": f"at://{did}/{POST}/{self.tid()}", "cid": self.record_cid()}

    def strong_ref_to_post(self) -> dict[str, str]:
        return dict(self.rng.choice(self.posts))

    # -- records -------------------------------------------------------------------------------------
    def like_or_repost(self, nsid: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "$type": nsid,
            "subject": self.strong_ref_to_post(),
            "createdAt": self.created_at(),
        }
        if self.rng.random() < 0.05:
            did = self._pick_account()[0]
            record["via"] = {"uri": f"at://{did}/{REPOST}/{self.tid()}", "cid": self.record_cid()}
        return record

    def follow(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "$type": FOLLOW,
            "subject": self._pick_account()[0],
            "createdAt": self.created_at(),
        }
        if self.rng.random() < 0.04:
            did = self._pick_account()[0]
            record["via"] = {
                "uri": f"at://{did}/app.bsky.graph.starterpack/{self.tid()}",
                "cid": self.record_cid(),
            }
        return record

    def post(self) -> dict[str, Any]:
        rng = self.rng
        text, langs, spans = self._text()
        record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": self.created_at()}
        if spans:
            raw = text.encode()
            facets = []
            at = 0
            for piece, feature in spans:
                start = raw.index(piece.encode(), at)
                at = start + len(piece.encode())
                facets.append({"index": {"byteStart": start, "byteEnd": at}, "features": [feature]})
            record["facets"] = facets
        if langs and rng.random() < 0.9:
            record["langs"] = langs
        if rng.random() < 0.4:
            root = self.strong_ref_to_post()
            parent = root if rng.random() < 0.5 else self.strong_ref_to_post()
            record["reply"] = {"root": root, "parent": parent}
        embed = self._embed()
        if embed is not None:
            record["embed"] = embed
            if embed["$type"] != "app.bsky.embed.record" and rng.random() < 0.06:
                record["labels"] = {
                    "$type": "com.atproto.label.defs#selfLabels",
                    "values": [{"val": rng.choice(_LABELS)}],
                }
        # later records may quote, reply to or like this one
        did = self._pick_account()[0]
        self.posts[rng.randrange(len(self.posts))] = self._post_ref(did)
        return record

    def _text(self) -> tuple[str, list[str], list[tuple[str, dict[str, Any]]]]:
        """Post text, its languages, and (substring, facet feature) pairs in text order."""
        rng = self.rng
        if rng.random() < 0.25:
            lang, sentences = rng.choice(_FOREIGN)
            langs = [lang]
            body = " ".join(rng.sample(sentences, rng.randint(1, min(3, len(sentences)))))
        else:
            langs = ["en"]
            body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 30))).capitalize()
            body += rng.choice(_ENDINGS)
            if rng.random() < 0.2:
                body += " " + "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 4)))
            if rng.random() < 0.05:
                langs.append(rng.choice(("ja", "pt", "es")))
        before: list[str] = []
        after: list[str] = []
        spans: list[tuple[str, dict[str, Any]]] = []
        if rng.random() < 0.12:
            did, handle = self._pick_account()
            before.append("@" + handle)
            spans.append(("@" + handle, {"$type": "app.bsky.richtext.facet#mention", "did": did}))
        if rng.random() < 0.1:
            url = f"https://{rng.choice(_DOMAINS)}/{rng.choice(_WORDS)}/{rng.randrange(10**6)}"
            after.append(url)
            spans.append((url, {"$type": "app.bsky.richtext.facet#link", "uri": url}))
        if rng.random() < 0.1:
            for word in rng.sample(_TAGS, rng.randint(1, 2)):
                after.append("#" + word)
                spans.append(("#" + word, {"$type": "app.bsky.richtext.facet#tag", "tag": word}))
        fixed = sum(len(part) + 1 for part in before + after)
        body = body[: MAX_TEXT_CODE_POINTS - fixed]
        return " ".join([*before, body, *after]), langs, spans

    def _images(self) -> dict[str, Any]:
        rng = self.rng
        images = []
        for _ in range(rng.choice((1, 1, 1, 1, 2, 2, 3, 4))):
            image: dict[str, Any] = {
                "alt": rng.choice(_ALTS),
                "image": self.blob(
                    rng.choice(("image/jpeg", "image/jpeg", "image/png", "image/webp")), 1_000_000
                ),
            }
            if rng.random() < 0.9:
                image["aspectRatio"] = {"width": rng.randint(400, 4000), "height": rng.randint(400, 4000)}
            images.append(image)
        return {"$type": "app.bsky.embed.images", "images": images}

    def _external(self) -> dict[str, Any]:
        rng = self.rng
        slug = "-".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6)))
        external: dict[str, Any] = {
            "uri": f"https://{rng.choice(_DOMAINS)}/{slug}",
            "title": slug.replace("-", " ").title(),
            "description": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 25))),
        }
        if rng.random() < 0.7:
            external["thumb"] = self.blob("image/jpeg", 950_000)
        return {"$type": "app.bsky.embed.external", "external": external}

    def _video(self) -> dict[str, Any]:
        rng = self.rng
        video: dict[str, Any] = {
            "$type": "app.bsky.embed.video",
            "video": self.blob("video/mp4", 50_000_000),
            "aspectRatio": rng.choice(({"width": 1080, "height": 1920}, {"width": 1920, "height": 1080})),
        }
        if rng.random() < 0.5:
            video["alt"] = rng.choice(_ALTS[1:])
        return video

    def _embed(self) -> dict[str, Any] | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.22:
            return self._images()
        if roll < 0.30:
            return self._external()
        if roll < 0.36:
            return {"$type": "app.bsky.embed.record", "record": self.strong_ref_to_post()}
        if roll < 0.39:
            media = self._images() if rng.random() < 0.8 else self._external()
            return {
                "$type": "app.bsky.embed.recordWithMedia",
                "record": {"$type": "app.bsky.embed.record", "record": self.strong_ref_to_post()},
                "media": media,
            }
        if roll < 0.41:
            return self._video()
        return None


def record_mix(n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (nsid, JSON-form record) pairs in network proportions, reproducible from ``seed``."""
    if n < 0:
        raise ValueError("n must be non-negative")
    gen = _Gen(seed)
    counts = {nsid: int(n * share) for nsid, share in SHARES}
    # hand out the rounding remainder to the largest fractional parts
    for nsid, _ in sorted(SHARES, key=lambda item: n * item[1] - int(n * item[1]), reverse=True):
        if sum(counts.values()) >= n:
            break
        counts[nsid] += 1
    order = [nsid for nsid, _ in SHARES for _ in range(counts[nsid])]
    gen.rng.shuffle(order)
    out: list[tuple[str, dict[str, Any]]] = []
    for nsid in order:
        if nsid == POST:
            record = gen.post()
        elif nsid == FOLLOW:
            record = gen.follow()
        else:
            record = gen.like_or_repost(nsid)
        out.append((nsid, record))
    return out
