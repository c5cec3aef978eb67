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
    "taken_over": {"en": "{n} items put on the books", "fr": "{n} articles mis en stock"},
    "taken_over_one": {"en": "{n} item put on the books", "fr": "{n} article mis en stock"},
    "taking_over": {"en": "{n} items found, put on the books when the count closes",
                    "fr": "{n} articles trouvés, mis en stock à la clôture"},
    "taking_over_one": {"en": "{n} item found, put on the books when the count closes",
                        "fr": "{n} article trouvé, mis en stock à la clôture"},
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
    "to_bring_n": {"en": "bring out {n} ({stock} in the stockroom, {floor} on the floor)",
                   "fr": "{n} à sortir ({stock} en réserve, {floor} en rayon)"},
    "shelf_not_on_books": {"en": "{n} piece(s) on the shelves not on the books: check them",
                           "fr": "{n} pièce(s) en rayon ou en réserve hors stock\u202f: "
                                 "à vérifier"},
    "suspected": {"en": "Suspected missing", "fr": "Disparitions suspectées"},
    "none": {"en": "Nothing to show.", "fr": "Rien à afficher."},
    "count_accuracy": {"en": "Count accuracy", "fr": "Exactitude des inventaires"},
    "axis_percent_found": {"en": "% of expected items found",
                           "fr": "% des articles attendus trouvés"},
    "axis_items_lost": {"en": "items lost", "fr": "articles perdus"},
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
    "sep": {"en": ": ", "fr": "\u202f: "},  # a label and its value ("Manquants : 2")
    "holds": {"en": "Holds", "fr": "Réservations"},
    "holds_title": {"en": "Held for clients", "fr": "Réservés pour des clients"},
    "client_ref": {"en": "Client reference (not a name)", "fr": "Référence client (pas de nom)"},
    "item_epc": {"en": "Item EPC (or put it on the desk reader)",
                 "fr": "EPC de l'article (ou posez-le sur le lecteur de caisse)"},
    "place_hold": {"en": "Hold for the client", "fr": "Réserver pour le client"},
    "release": {"en": "Release", "fr": "Libérer"},
    "held_for": {"en": "for client {client}", "fr": "pour le client {client}"},
    "held_since": {"en": "since {when}", "fr": "depuis le {when}"},
    "held_until": {"en": "until {when}", "fr": "jusqu'au {when}"},
    "now_in": {"en": "now {place}", "fr": "actuellement {place}"},
    "missing_since": {"en": "missing — last seen {place} on {when}",
                      "fr": "manquant — vu en dernier {place} le {when}"},
    # where an item is: a zone's label from the config as it is written, else its key
    "in_zone_label": {"en": "in {zone}", "fr": "en {zone}"},
    "in_zone_key": {"en": "in the {zone} zone", "fr": "dans la zone {zone}"},
    "in_zone_unknown": {"en": "in an unknown zone", "fr": "dans une zone inconnue"},
    "seen": {"en": "seen by a reader", "fr": "vu par un lecteur"},
    "never_seen": {"en": "never seen by a reader", "fr": "jamais vu par un lecteur"},
    "no_holds": {"en": "No item is held.", "fr": "Aucun article réservé."},
    "refused": {"en": "Refused: {reason}", "fr": "Refusé\u202f: {reason}"},
    "open_alerts": {"en": "Open alerts", "fr": "Alertes ouvertes"},
    "acknowledge": {"en": "Acknowledge", "fr": "Prendre en compte"},
    "resolve": {"en": "Resolve", "fr": "Résoudre"},
    "resolve_needs_manager": {
        "en": "Resolving an alert needs a manager: ask one to sign in.",
        "fr": "Résoudre une alerte demande un responsable\u202f: demandez-lui de se connecter."},
    "alert_open": {"en": "open since {when}", "fr": "ouverte depuis le {when}"},
    "alert_acknowledged": {"en": "acknowledged by {who} on {when}",
                           "fr": "prise en compte par {who} le {when}"},
    "res_false_alarm": {"en": "False alarm", "fr": "Fausse alerte"},
    "res_recovered": {"en": "Recovered", "fr": "Récupéré"},
    "res_confirmed_loss": {"en": "Confirmed loss", "fr": "Perte confirmée"},
    "type_exit_unsold": {"en": "Left through the exit unsold", "fr": "Sorti sans être vendu"},
    "type_return_refused": {"en": "Return refused", "fr": "Retour refusé"},
    "no_alerts": {"en": "No open alert.", "fr": "Aucune alerte ouverte."},
    "on_desk": {"en": "On the desk reader", "fr": "Sur le lecteur de caisse"},
    "desk_wait": {"en": "Put an item on the desk reader to see it here.",
                  "fr": "Posez un article sur le lecteur de caisse pour le voir ici."},
    "find_handheld": {"en": "Find it with {reader}", "fr": "Le chercher avec {reader}"},
    "stop_finding": {"en": "Stop searching", "fr": "Arrêter la recherche"},
    "signal": {"en": "Signal {rssi} dBm (best {best} dBm): the fuller, the closer",
               "fr": "Signal {rssi} dBm (meilleur {best} dBm)\u202f: plus la barre est "
                     "pleine, plus l'article est près"},
    "not_heard": {"en": "Not heard yet: walk the zone with the handheld.",
                  "fr": "Pas encore capté\u202f: parcourez la zone avec le lecteur portable."},
    "notice_reception": {
        "en": "The item held for client {client} has arrived at reception: {name}",
        "fr": "L'article réservé pour le client {client} est arrivé en réception\u202f: {name}"},
    "notice_floor": {
        "en": "The item held for client {client} is on the sales floor: {name}",
        "fr": "L'article réservé pour le client {client} est arrivé en surface de "
              "vente\u202f: {name}"},
    "no_notice": {"en": "No news for the floor.", "fr": "Rien de nouveau pour la vente."},
}

# An item's lifecycle state (inventory.lifecycle.Status) and the CBV business steps of its
# history, in words: the page shows these, never the codes.
TERMS: dict[str, dict[str, str]] = {
    "commissioned": {"en": "commissioned", "fr": "mis en service"},
    "packed": {"en": "packed", "fr": "emballé"},
    "in_transit": {"en": "in transit", "fr": "en transit"},
    "in_stock": {"en": "in stock (stockroom)", "fr": "en stock (réserve)"},
    "on_floor": {"en": "on the sales floor", "fr": "en surface de vente"},
    "sold": {"en": "sold", "fr": "vendu"},
    "returned": {"en": "returned by a client", "fr": "retourné par un client"},
    "in_repair": {"en": "in repair", "fr": "en réparation"},
    "on_loan": {"en": "on loan", "fr": "prêté"},
    "missing": {"en": "missing (left through the exit)", "fr": "manquant (sorti par la porte)"},
    "held": {"en": "held for a client", "fr": "réservé pour un client"},
    "awaiting_collection": {"en": "sold, awaiting collection", "fr": "vendu, à retirer"},
    "destroyed": {"en": "destroyed", "fr": "détruit"},
    "decommissioned": {"en": "decommissioned", "fr": "désactivé"},
    "commissioning": {"en": "commissioned", "fr": "mise en service"},
    "packing": {"en": "packed", "fr": "emballage"},
    "shipping": {"en": "shipped", "fr": "expédition"},
    "receiving": {"en": "received", "fr": "réception"},
    "stocking": {"en": "stocked", "fr": "mise en stock"},
    "storing": {"en": "stored", "fr": "rangement"},
    "retail_selling": {"en": "sold", "fr": "vente"},
    "cycle_counting": {"en": "counted", "fr": "inventaire"},
    "entering_exiting": {"en": "through the exit", "fr": "passage en sortie"},
    "repairing": {"en": "repaired", "fr": "réparation"},
    "destroying": {"en": "destroyed", "fr": "destruction"},
    "holding": {"en": "held", "fr": "réservation"},
    "departing": {"en": "departed", "fr": "départ"},
    "decommissioning": {"en": "decommissioned", "fr": "désactivation"},
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

    def term(self, code: str | None) -> str:
        """A state or business step in words; an unknown code reads as itself, unspaced."""
        if not code:
            return ""
        known = TERMS.get(code)
        return known[self.lang] if known else code.replace("_", " ")

    def label(self, key: str, value: str) -> str:
        """"Missing: 2" / "Manquants : 2" (French: a narrow no-break space before the colon)."""
        return f"{self.t(key)}{self.t('sep')}{value}"

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

    def place(self, zone: str | None, label: str | None = None) -> str:
        """"in Sales floor" (the zone's label), else "in the floor zone": not a bare key."""
        if label:
            return self.t("in_zone_label", zone=label)
        return self.t("in_zone_key", zone=zone) if zone else self.t("in_zone_unknown")

    def count_headline(self, found: int, expected: int, taken: int | None,
                       running: bool) -> str:
        """"4,812 of 5,000 found"; for a take-over count (`taken` not None) what it put on the
        books, or will on closing, and "found of expected" only if it expected anything."""
        if taken is None:
            return self.found_of(found, expected)
        key = ("taking_over" if running else "taken_over") + ("_one" if taken == 1 else "")
        text = self.t(key, n=self.number(taken))
        return f"{text} · {self.found_of(found, expected)}" if expected else text
