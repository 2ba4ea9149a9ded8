"""The two notification texts, in English, French and German.

They hold only what the terms allow in an email: the account id, the export id, file names and
sizes, and dates. Links are never part of them (``notify.email`` refuses any that slips in).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from kernel.errors import BadInput
from kernel.ids import validate_tenant_id

LANGUAGES = ("en", "fr", "de")
DEFAULT_LANGUAGE = "en"
WIDTH = 72


@dataclass(frozen=True)
class PackageFile:
    """One file of an export package, as the email lists it: name and size, nothing else."""

    name: str
    bytes: int


@dataclass(frozen=True)
class Letter:
    """A composed notification: subject and plain-text body in one language."""

    kind: str
    language: str
    subject: str
    body: str


def language_of(value: str | None) -> str:
    """``fr``, ``fr-CA``, ``FR_fr`` -> ``fr``; unknown or unset -> ``en``."""
    code = (value or "").strip().lower().replace("_", "-").split("-")[0]
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


_UNITS = {"en": ("bytes", "kB", "MB", "GB", "TB"), "fr": ("octets", "ko", "Mo", "Go", "To"),
          "de": ("Bytes", "kB", "MB", "GB", "TB")}
_DECIMAL = {"en": ".", "fr": ",", "de": ","}
_GROUP = {"en": ",", "fr": "\u202f", "de": "."}


def human_size(size: int, language: str) -> str:
    """Decimal units with one digit after the separator: ``12.3 MB``, ``12,3 Mo``."""
    units = _UNITS[language]
    if size < 1000:
        return f"{size} {units[0]}"
    value, unit = float(size), 0
    while value >= 999.95 and unit < len(units) - 1:
        value, unit = value / 1000, unit + 1
    return f"{value:.1f}".replace(".", _DECIMAL[language]) + f" {units[unit]}"


def exact_size(size: int, language: str) -> str:
    """``12,345,678`` / ``12 345 678`` / ``12.345.678``."""
    return f"{size:,}".replace(",", _GROUP[language])


def when(moment: date | datetime) -> str:
    """ISO date, plus the UTC time for a datetime: the same unambiguous form in every language."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise BadInput("notification times must carry a time zone")
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"{moment:%Y-%m-%d}"


_READY = {
    "en": ("[{tenant}] Your data export is ready",
           "Hello,\n\n"
           "The export of your data (account {tenant}, export {export_id}) is ready. "
           "It contains {count} files, {total} in total ({exact} {unit}):\n\n"
           "{files}\n\n"
           "How to fetch it: download links are never sent by email. Open the export page of "
           "the platform's self-service portal, or ask your contact person for links. Links "
           "expire after a few days; fresh ones can be requested for as long as the package "
           "exists. datapackage.json lists a SHA-256 checksum for every file.\n\n"
           "The package will be deleted on {delete_on}. Please download it before then.\n\n"
           "This automatic message goes to the authorised contacts of the account.\n"),
    "fr": ("[{tenant}] Votre export de données est prêt",
           "Bonjour,\n\n"
           "L'export de vos données (compte {tenant}, export {export_id}) est prêt. "
           "Il contient {count} fichiers, {total} au total ({exact} {unit}) :\n\n"
           "{files}\n\n"
           "Comment le récupérer : les liens de téléchargement ne sont jamais envoyés par "
           "courriel. Ouvrez la page d'export du portail libre-service de la plateforme, ou "
           "demandez les liens à votre interlocuteur. Les liens expirent après quelques jours ; "
           "de nouveaux liens peuvent être demandés tant que le paquet existe. "
           "datapackage.json indique une somme de contrôle SHA-256 pour chaque fichier.\n\n"
           "Le paquet sera supprimé le {delete_on}. Merci de le télécharger avant cette date.\n\n"
           "Ce message automatique est adressé aux contacts autorisés du compte.\n"),
    "de": ("[{tenant}] Ihr Datenexport ist bereit",
           "Guten Tag,\n\n"
           "der Export Ihrer Daten (Konto {tenant}, Export {export_id}) ist bereit. "
           "Er enthält {count} Dateien, insgesamt {total} ({exact} {unit}):\n\n"
           "{files}\n\n"
           "So erhalten Sie ihn: Download-Links werden nie per E-Mail verschickt. Öffnen Sie die "
           "Exportseite im Self-Service-Portal der Plattform oder erfragen Sie die Links bei "
           "Ihrer Ansprechperson. Links laufen nach einigen Tagen ab; neue Links können "
           "angefordert werden, solange das Paket besteht. datapackage.json nennt für jede "
           "Datei eine SHA-256-Prüfsumme.\n\n"
           "Das Paket wird am {delete_on} gelöscht. Bitte laden Sie es vorher herunter.\n\n"
           "Diese automatische Nachricht geht an die berechtigten Kontakte des Kontos.\n"),
}

_DELETION = {
    "en": ("[{tenant}] Your data will be deleted on {date}",
           "Hello,\n\n{contract}"
           "On {delete_on} we will permanently delete the data of account {tenant} held by the "
           "platform's export and backup systems: export packages and every backup. The keys "
           "that encrypt the backups are destroyed, so no remaining copy can be read. A signed "
           "deletion certificate is issued afterwards.\n\n{export}\n\n"
           "This automatic message goes to the authorised contacts of the account.\n",
           "Your contract ended on {contract_end}.\n\n",
           "Your export {export_id} can be downloaded until then; ask for fresh links if yours "
           "have expired.",
           "If you have not downloaded your data yet, request an export before that date."),
    "fr": ("[{tenant}] Vos données seront supprimées le {date}",
           "Bonjour,\n\n{contract}"
           "Le {delete_on}, nous supprimerons définitivement les données du compte {tenant} "
           "conservées par les systèmes d'export et de sauvegarde de la plateforme : paquets "
           "d'export et toutes les sauvegardes. Les clés qui chiffrent les sauvegardes sont "
           "détruites, de sorte qu'aucune copie restante ne peut être lue. Un certificat de "
           "suppression signé est ensuite délivré.\n\n{export}\n\n"
           "Ce message automatique est adressé aux contacts autorisés du compte.\n",
           "Votre contrat a pris fin le {contract_end}.\n\n",
           "Votre export {export_id} reste téléchargeable jusque-là ; demandez de nouveaux liens "
           "si les vôtres ont expiré.",
           "Si vous n'avez pas encore téléchargé vos données, demandez un export avant cette "
           "date."),
    "de": ("[{tenant}] Ihre Daten werden am {date} gelöscht",
           "Guten Tag,\n\n{contract}"
           "Am {delete_on} löschen wir die Daten des Kontos {tenant} in den Export- und "
           "Backup-Systemen der Plattform endgültig: Exportpakete und alle Backups. Die "
           "Schlüssel, mit denen die Backups verschlüsselt sind, werden vernichtet, sodass keine "
           "verbliebene Kopie mehr lesbar ist. Anschließend wird ein signiertes "
           "Löschzertifikat ausgestellt.\n\n{export}\n\n"
           "Diese automatische Nachricht geht an die berechtigten Kontakte des Kontos.\n",
           "Ihr Vertrag endete am {contract_end}.\n\n",
           "Ihr Export {export_id} kann bis dahin heruntergeladen werden; fordern Sie neue Links "
           "an, falls Ihre abgelaufen sind.",
           "Falls Sie Ihre Daten noch nicht heruntergeladen haben, fordern Sie vor diesem Datum "
           "einen Export an."),
}


def export_ready(*, tenant_id: str, export_id: str, files: Sequence[PackageFile],
                 delete_on: date | datetime, language: str | None = None) -> Letter:
    """"Your export is ready": its files (names and sizes), total size, how to fetch it, and when
    it will be deleted.

    Raises:
        BadInput: an invalid tenant id, no files, a negative size or a name with control
            characters.
    """
    validate_tenant_id(tenant_id)
    lang = language_of(language)
    if not files:
        raise BadInput("an export-ready notification needs the package's files",
                       tenant_id=tenant_id)
    for item in files:
        if item.bytes < 0 or not item.name or not item.name.isprintable():
            raise BadInput(f"invalid package file {item.name!r} ({item.bytes} bytes)",
                           tenant_id=tenant_id)
    width = max(len(f.name) for f in files)
    lines = "\n".join(f"  {f.name:<{width}}  {human_size(f.bytes, lang):>10}" for f in files)
    total = sum(f.bytes for f in files)
    subject, body = _READY[lang]
    fields = {"tenant": tenant_id, "export_id": export_id, "count": len(files),
              "total": human_size(total, lang), "exact": exact_size(total, lang),
              "unit": _UNITS[lang][0], "files": lines, "delete_on": when(delete_on)}
    return Letter("export.ready", lang, subject.format(**fields), _wrap(body.format(**fields)))


def deletion_notice(*, tenant_id: str, delete_on: date | datetime,
                    contract_end: date | None = None, export_id: str | None = None,
                    language: str | None = None) -> Letter:
    """"Your data will be deleted on DATE", sent before purge."""
    validate_tenant_id(tenant_id)
    lang = language_of(language)
    subject, body, contract, export, no_export = _DELETION[lang]
    day = delete_on.astimezone(UTC).date() if isinstance(delete_on, datetime) else delete_on
    fields = {"tenant": tenant_id, "date": when(day), "delete_on": when(delete_on),
              "export_id": export_id or "", "contract_end": when(contract_end or day)}
    fields["contract"] = contract.format(**fields) if contract_end else ""
    fields["export"] = (export if export_id else no_export).format(**fields)
    return Letter("deletion.notice", lang, subject.format(**fields),
                  _wrap(body.format(**fields)))


def _wrap(body: str) -> str:
    """Lines of at most 72 characters (the file list, indented, is left as it is)."""
    return "\n".join(
        line if line.startswith("  ") or len(line) <= WIDTH else textwrap.fill(
            line, WIDTH, break_long_words=False, break_on_hyphens=False)
        for line in body.split("\n"))
