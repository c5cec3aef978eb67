"""French and English for the staff page: the words, and numbers, money and dates formatted by
Babel in the reader's locale and the site's time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

LANGS = ("fr", "en")
LOCALES = {"fr": "fr_FR", "en": "en_GB"}

WORDS: dict[str, dict[str, str]] = {
    "title": {"en": "Store", "fr": "Magasin"},
    "sign_in": {"en": "Sign in", "fr": "Se connecter"},
    "sign_out": {"en": "Sign out", "fr": "Se déconnecter"},
    "login": {"en": "Name", "fr": "Nom"},
    "pin": {"en": "PIN", "fr": "Code"},
    "bad_sign_in": {"en": "Name or PIN not recognised.", "fr": "Nom ou code non reconnu."},
    "count": {"en": "Count", "fr": "Inventaire"},
    "reception": {"en": "Reception", "fr": "Réception"},
    "find": {"en": "Find", "fr": "Chercher"},
    "replenish": {"en": "Replenish", "fr": "Réassort"},
    "alerts": {"en": "Alerts", "fr": "Alertes"},
    "charts": {"en": "Charts", "fr": "Graphiques"},
    "floor_mode": {"en": "Sales floor", "fr": "Mode vente"},
    "start_count": {"en": "Start the count", "fr": "Lancer l'inventaire"},
    "close_count": {"en": "Close the count", "fr": "Clôturer l'inventaire"},
    "choose_zones": {"en": "Zones to count", "fr": "Zones à compter"},
    "found_of": {"en": "{found} of {expected} found", "fr": "{found} sur {expected} trouvés"},
    "missing": {"en": "Missing", "fr": "Manquants"},
    "unexpected": {"en": "Unexpected", "fr": "Inattendus"},
    "report": {"en": "Report", "fr": "Rapport"},
    "accuracy": {"en": "Accuracy", "fr": "Exactitude"},
    "open_receptions": {"en": "Open receptions", "fr": "Réceptions ouvertes"},
    "no_reception": {"en": "No reception is open.", "fr": "Aucune réception ouverte."},
    "note": {"en": "Note", "fr": "Note"},
    "close_reception": {"en": "Close the reception", "fr": "Clôturer la réception"},
    "expected": {"en": "Expected", "fr": "Attendus"},
    "received": {"en": "Received", "fr": "Reçus"},
    "search": {"en": "EPC, SKU or name", "fr": "EPC, référence ou nom"},
    "where": {"en": "Where", "fr": "Où"},
    "state": {"en": "State", "fr": "État"},
    "last_seen": {"en": "Last seen", "fr": "Vu en dernier"},
    "history": {"en": "History", "fr": "Historique"},
    "nothing_found": {"en": "Nothing found.", "fr": "Rien trouvé."},
    "to_bring": {"en": "To bring to the floor", "fr": "À mettre en rayon"},
    "suspected": {"en": "Suspected missing", "fr": "Disparitions suspectées"},
    "none": {"en": "Nothing to show.", "fr": "Rien à afficher."},
    "count_accuracy": {"en": "Count accuracy", "fr": "Exactitude des inventaires"},
    "shrinkage_zone": {"en": "Shrinkage by zone", "fr": "Démarque par zone"},
    "shrinkage_category": {"en": "Shrinkage by category", "fr": "Démarque par catégorie"},
    "product": {"en": "Product", "fr": "Produit"},
    "size": {"en": "Size", "fr": "Taille"},
    "colour": {"en": "Colour", "fr": "Couleur"},
    "zone": {"en": "Zone", "fr": "Zone"},
    "price": {"en": "Price", "fr": "Prix"},
    "running": {"en": "running", "fr": "en cours"},
    "finished": {"en": "finished", "fr": "terminé"},
    "closed": {"en": "closed", "fr": "clôturée"},
    "week_of": {"en": "week of {date}", "fr": "semaine du {date}"},
}


def pick_lang(query: str | None, cookie: str | None, accept: str | None) -> str:
    for v in (query, cookie):
        if v in LANGS:
            return str(v)
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGS:
            return code
    return "en"


class Formatter:
    """Display strings for one reader: their language, the site's time zone."""

    def __init__(self, lang: str, timezone: str) -> None:
        self.lang = lang if lang in LANGS else "en"
        self.locale = LOCALES[self.lang]
        self.tz = ZoneInfo(timezone)

    def t(self, key: str, **kw: object) -> str:
        text = WORDS[key][self.lang]
        return text.format(**kw) if kw else text

    def words(self) -> dict[str, str]:
        return {k: v[self.lang] for k, v in WORDS.items()}

    def number(self, n: float | int) -> str:
        from babel.numbers import format_decimal

        return format_decimal(n, locale=self.locale)

    def percent(self, ratio: float | None) -> str:
        from babel.numbers import format_percent

        return "—" if ratio is None else format_percent(ratio, "#,##0.0%", locale=self.locale)

    def money(self, amount: Decimal | str | float, currency: str) -> str:
        from babel.numbers import format_currency

        return format_currency(Decimal(str(amount)), currency, locale=self.locale)

    def when(self, t: float | None) -> str:
        if t is None:
            return ""
        dt = datetime.fromtimestamp(t, UTC).astimezone(self.tz)
        from babel.dates import format_datetime

        return format_datetime(dt, "short", tzinfo=self.tz, locale=self.locale)

    def day(self, t: float) -> str:
        dt = datetime.fromtimestamp(t, UTC).astimezone(self.tz)
        from babel.dates import format_datetime

        return format_datetime(dt, "d MMM", tzinfo=self.tz, locale=self.locale)

    def found_of(self, found: int, expected: int) -> str:
        return self.t("found_of", found=self.number(found), expected=self.number(expected))
