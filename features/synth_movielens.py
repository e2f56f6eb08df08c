"""A MovieLens-100K look-alike: the same files, formats and sizes as GroupLens' ml-100k folder
(u.data, u.user, u.item, u.genre, u.occupation; '|'-separated latin-1 side tables), written by the
project itself so that a fresh clone can test and demo the MovieLens path without the real data,
whose licence forbids redistribution.

Ratings come from planted latent tastes: every user and item has a vector, a user's rated items
are drawn by popularity plus affinity, and the rating grows with the affinity, so that both
retrieval (who watches what) and rating prediction have something to learn. Each user's ratings
are spread over time in order, so "the latest positives" hold out meaningfully."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from plexrec.features.errors import ConfigError, DataError
from plexrec.features.synth import SynthStats

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment",
               "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none",
               "other", "programmer", "retired", "salesman", "scientist", "student",
               "technician", "writer")
ML100K_USERS, ML100K_ITEMS, ML100K_RATINGS = 943, 1682, 100_000
MIN_RATINGS_PER_USER = 20
# Share of ratings 1..5 in ml-100k (55.4% are >= 4, the positives of configs/movielens.toml).
RATING_SHARE = (0.061, 0.114, 0.271, 0.342, 0.212)
_WORDS = ("Night", "River", "City", "Dream", "Café", "Étoile", "Summer", "Ghost", "Love", "War",
          "Return", "Island", "Secret", "Last", "Blue", "Fire", "Señor", "King", "Road", "Heart",
          "Storm", "Garden", "Mirror", "Winter")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FIRST_TIME, _LAST_TIME = 874_724_710, 893_286_638
_DIM = 6
_POPULARITY_EXPONENT = 2.0
_AFFINITY = 4.0
FILES = ("u.data", "u.user", "u.item", "u.genre", "u.occupation")


def write_movielens(out_dir: str | Path, seed: int = 0, users: int = ML100K_USERS,
                    items: int = ML100K_ITEMS, ratings: int = ML100K_RATINGS,
                    progress: bool = True) -> SynthStats:
    """Writes a MovieLens-100K-format folder to `out_dir`; the files depend only on the
    arguments. Every user rates at least 20 distinct items, as in the real data."""
    if users < 1 or items < MIN_RATINGS_PER_USER:
        raise ConfigError(f"movielens look-alike needs users >= 1 and items >= "
                          f"{MIN_RATINGS_PER_USER}, got users={users}, items={items}")
    if not users * MIN_RATINGS_PER_USER <= ratings <= users * items:
        raise ConfigError(f"ratings = {ratings} must be in [{users * MIN_RATINGS_PER_USER}, "
                          f"{users * items}] for {users} users and {items} items")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    taste_u = rng.normal(size=(users, _DIM)) / np.sqrt(_DIM)
    taste_i = rng.normal(size=(items, _DIM)) / np.sqrt(_DIM)
    quality = rng.normal(scale=0.5, size=items)
    log_pop = -_POPULARITY_EXPONENT * np.log(rng.permutation(items) + 1.0)
    counts = _ratings_per_user(rng, users, items, ratings)
    rows = _draw_ratings(rng, taste_u, taste_i, quality, log_pop, counts)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
        _write(out / "u.user", _users(rng, users))
        _write(out / "u.item", _items(rng, items, taste_i))
        _write(out / "u.genre", "".join(f"{g}|{n}\n" for n, g in enumerate(GENRES)) + "\n")
        _write(out / "u.occupation", "".join(f"{o}\n" for o in OCCUPATIONS))
    except OSError as exc:
        raise DataError(f"cannot write the movielens look-alike: {exc.strerror}",
                        path=str(out)) from None
    positives = sum(1 for row in rows if row[2] >= 4)
    paths = tuple(str(out / name) for name in FILES)
    stats = SynthStats(kind="movielens", rows=len(rows), positives=positives,
                       seconds=time.perf_counter() - t0, paths=paths,
                       bytes=sum(Path(p).stat().st_size for p in paths), users=users,
                       items=items)
    if progress:
        print(f"synth movielens: wrote {len(rows):,} ratings ({users:,} users, {items:,} items) "
              f"to {out}, ratings >= 4: {stats.label_rate:.3f}, {stats.seconds:.1f}s",
              file=sys.stderr)
    return stats


def _ratings_per_user(rng: np.random.Generator, users: int, items: int, total: int
                      ) -> np.ndarray:
    """A heavy-tailed count per user (a few users rate hundreds of films), at least 20, at most
    `items`, summing to `total`."""
    weights = rng.lognormal(mean=0.0, sigma=1.0, size=users)
    spare = total - users * MIN_RATINGS_PER_USER
    counts = MIN_RATINGS_PER_USER + np.floor(spare * weights / weights.sum()).astype(np.int64)
    counts = np.minimum(counts, items)
    while (short := total - int(counts.sum())) > 0:
        room = np.flatnonzero(counts < items)
        counts[rng.choice(room, size=min(short, len(room)), replace=False)] += 1
    return counts


def _draw_ratings(rng: np.random.Generator, taste_u: np.ndarray, taste_i: np.ndarray,
                  quality: np.ndarray, log_pop: np.ndarray, counts: np.ndarray
                  ) -> list[tuple[int, int, int, int]]:
    """(user, item, rating, timestamp) in the real file's shuffled order. Items are drawn
    without replacement by Gumbel top-k over popularity plus affinity; ratings are quantiles of
    affinity plus quality plus noise, cut to ml-100k's rating shares."""
    affinity = taste_u @ taste_i.T
    picks: list[np.ndarray] = []
    for u, k in enumerate(counts.tolist()):
        score = log_pop + _AFFINITY * affinity[u] + rng.gumbel(size=len(log_pop))
        picks.append(np.argpartition(-score, k - 1)[:k])
    _cover_every_item(rng, picks, len(log_pop))
    user = np.repeat(np.arange(len(counts)), counts)
    item = np.concatenate(picks)
    merit = affinity[user, item] * 2.0 + quality[item] + rng.normal(scale=0.6, size=len(item))
    cuts = np.quantile(merit, np.cumsum(RATING_SHARE)[:-1])
    rating = 1 + np.searchsorted(cuts, merit)
    span = rng.uniform(1e5, 0.8 * (_LAST_TIME - _FIRST_TIME), size=len(counts))
    start = _FIRST_TIME + rng.uniform(0, 1, size=len(counts)) * (_LAST_TIME - _FIRST_TIME - span)
    offset = np.concatenate([np.sort(rng.uniform(0, 1, size=k)) for k in counts.tolist()])
    stamp = (start[user] + span[user] * offset).astype(np.int64)
    order = rng.permutation(len(item))
    return list(zip((user[order] + 1).tolist(), (item[order] + 1).tolist(),
                    rating[order].tolist(), stamp[order].tolist(), strict=True))


def _cover_every_item(rng: np.random.Generator, picks: list[np.ndarray], items: int) -> None:
    """Every film of ml-100k has a rating: an item nobody drew replaces, for a random user who
    lacks it, one of that user's picks that others also rated."""
    held = np.bincount(np.concatenate(picks), minlength=items)
    for item in np.flatnonzero(held == 0).tolist():
        for u in rng.permutation(len(picks)).tolist():
            shared = np.flatnonzero(held[picks[u]] > 1)
            if len(shared) and item not in picks[u]:
                slot = int(rng.choice(shared))
                held[picks[u][slot]] -= 1
                picks[u][slot] = item
                held[item] += 1
                break


def _users(rng: np.random.Generator, users: int) -> str:
    """id|age|gender|occupation|zip; a few zips are Canadian postcodes, as in the real file."""
    ages = np.clip(rng.normal(33, 12, size=users), 7, 73).astype(int)
    lines = []
    for u in range(users):
        gender = "M" if rng.random() < 0.71 else "F"
        occupation = OCCUPATIONS[int(rng.integers(len(OCCUPATIONS)))]
        if rng.random() < 0.02:
            zip_code = f"{'TVLEMK'[int(rng.integers(6))]}{int(rng.integers(10))}" \
                       f"{'ABCHNRX'[int(rng.integers(7))]}{int(rng.integers(10))}" \
                       f"{'ABCHNRX'[int(rng.integers(7))]}"
        else:
            zip_code = f"{int(rng.integers(100, 99_999)):05d}"
        lines.append(f"{u + 1}|{ages[u]}|{gender}|{occupation}|{zip_code}\n")
    return "".join(lines)


def _items(rng: np.random.Generator, items: int, taste_i: np.ndarray) -> str:
    """id|title|release date|video release date|IMDb URL|19 genre flags. Genres follow the
    item's taste vector, so they carry signal; a title may hold a comma or a latin-1 letter."""
    genre_axis = rng.normal(size=(taste_i.shape[1], len(GENRES) - 1))
    genre_score = taste_i @ genre_axis
    lines = []
    for i in range(items):
        year = int(rng.integers(1922, 1999))
        words = [_WORDS[int(j)] for j in rng.integers(len(_WORDS), size=int(rng.integers(1, 4)))]
        title = " ".join(words) + (", The" if rng.random() < 0.1 else "") + f" ({year})"
        date = f"{int(rng.integers(1, 29)):02d}-{_MONTHS[int(rng.integers(12))]}-{year}"
        flags = ["0"] * len(GENRES)
        if rng.random() < 0.002:
            flags[0], title, date = "1", "unknown", ""
        else:
            for g in np.argsort(-genre_score[i])[:int(rng.integers(1, 4))]:
                flags[int(g) + 1] = "1"
        url = f"http://us.imdb.com/M/title-exact?{title.replace(' ', '%20')}" if date else ""
        lines.append(f"{i + 1}|{title}|{date}||{url}|{'|'.join(flags)}\n")
    return "".join(lines)


def _write(path: Path, text: str) -> None:
    """Latin-1, as GroupLens ships it; written to a temporary name and renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode("latin-1"))
    tmp.replace(path)
