"""The words of the package guide (README.html / README.txt) in each supported language.

Plain words for a person who is not technical. Menu paths and option names are the programs'
own, in the same language: LibreOffice's from its translations (Text Import dialog, Calc 25.x),
Excel's from Microsoft 365. Placeholders in braces are filled by ``exporters.guide``; every
language has the same keys (tests/test_guide.py checks it).
"""

from __future__ import annotations

MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
           "septembre", "octobre", "novembre", "décembre"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
           "Oktober", "November", "Dezember"],
}

# thousands separator, decimal separator, date pattern, units (bytes, then 1000-based)
NUMBERS = {
    "en": (",", ".", "{day} {month} {year}, {time} UTC", ["bytes", "kB", "MB", "GB", "TB"]),
    "fr": ("\u202f", ",", "{day} {month} {year}, {time} UTC", ["octets", "ko", "Mo", "Go", "To"]),
    "de": (".", ",", "{day}. {month} {year}, {time} UTC", ["Bytes", "kB", "MB", "GB", "TB"]),
}

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your data export",
        "intro": "This package holds the data of {tenant} as it was on {created}. This guide "
                 "explains what is inside, how to open it, and how to check it.",
        "h_inside": "What is inside",
        "inside_intro": "Each table comes twice: as a spreadsheet workbook (.xlsx), the easiest "
                        "to open, and as a CSV file, the exact original for programs and for a "
                        "new provider.",
        "col_file": "File", "col_content": "What it is", "col_size": "Size",
        "col_sha": "SHA-256 checksum",
        "kind_table": "Table “{table}”, {count} rows, as CSV",
        "kind_workbook": "Table “{table}” as a spreadsheet workbook",
        "kind_index": "List of your uploaded documents ({count}): original name, upload date, "
                      "and the ZIP file holding each one",
        "kind_documents": "Your uploaded documents (ZIP file)",
        "kind_manifest": "Technical description of every file, for programs",
        "kind_archive": "All files of the package in one ZIP file, with their folders",
        "kind_other": "Other file",
        "size": "{human} ({exact} {unit})",
        "kind_table_one": "Table “{table}”, 1 row, as CSV",
        "kind_index_one": "List of your uploaded documents (1): original name, upload date, "
                          "and the ZIP file holding it",
        "orphans_one": "1 row of table “{table}” belongs to no client; it is in nobody's "
                       "export.",
        "cross_one": "1 row of table “{table}” links your data with another client's; it is "
                     "in nobody's export.",
        "missing_documents_one": "1 document is listed in documents/index.csv with the status "
                                 "“missing”: the platform still has its record, but no longer "
                                 "its file.",
        "truncated_one": "1 text is longer than a spreadsheet cell can hold (32,767 "
                         "characters): in the .xlsx files it is cut and ends with “[…]”. The "
                         "CSV files hold it in full.",
        "h_open": "Opening the tables in a spreadsheet",
        "open_xlsx": "The simplest way: open the .xlsx files of the data folder in Excel, "
                     "LibreOffice Calc, Numbers or any spreadsheet program. Texts, numbers and "
                     "dates appear exactly as they are on the platform. A very long table "
                     "continues on further sheets of the same workbook.",
        "open_csv": "To use the CSV files instead, import them so that nothing is converted:",
        "open_lo": "LibreOffice Calc: File → Open, choose the .csv file. In the “Text Import” "
                   "dialog, set the character set to “Unicode (UTF-8)”, tick “{sep_name}” as "
                   "separator, tick “Format quoted field as text”, then OK.",
        "open_excel": "Excel: Data → From Text/CSV, choose the .csv file. Set “File origin” to "
                      "“65001: Unicode (UTF-8)”, the delimiter to “{sep_name}” and “Data type "
                      "detection” to “Do not detect data types”, then Load.",
        "csv_rule": "In the CSV files every text is between double quotes, and nothing else "
                    "is: numbers, dates and true/false values are not. An empty field means "
                    "“no value”; two double quotes (\"\") mean an empty text.",
        "csv_excel": "These CSV files were prepared for spreadsheets: they begin with a "
                     "byte-order mark, use “{sep}” as separator, and a text that would begin "
                     "with =, +, -, @, a tab or a line break begins with an apostrophe (') so "
                     "that no spreadsheet runs it as a formula.",
        "sep_comma": "Comma", "sep_semicolon": "Semicolon",
        "h_check": "Checking that nothing was damaged",
        "check_intro": "Every file has a SHA-256 checksum, listed above and in "
                       "datapackage.json. Compute it on your copy and compare: when both "
                       "values are equal, the file is exactly as we wrote it.",
        "os_windows": "Windows (PowerShell)", "os_mac": "macOS (Terminal)",
        "os_linux": "Linux (terminal)",
        "h_missing": "What is not in the export, and why",
        "nothing_missing": "Nothing was left out: every table holding your data is here.",
        "shared": "Tables shared by all clients of the platform, which hold none of your own "
                  "data: {tables}.",
        "skipped": "Table “{table}” is not included: {reason}.",
        "excluded": "Column “{column}” of table “{table}” is not included: it holds security "
                    "data (such as password hashes) that never leaves the platform.",
        "orphans": "{count} rows of table “{table}” belong to no client; they are in nobody's "
                   "export.",
        "cross": "{count} rows of table “{table}” link your data with another client's; they "
                 "are in nobody's export.",
        "missing_documents": "{count} documents are listed in documents/index.csv with the "
                             "status “missing”: the platform still has their record, but no "
                             "longer their file.",
        "truncated": "{count} texts are longer than a spreadsheet cell can hold (32,767 "
                     "characters): in the .xlsx files they are cut and end with “[…]”. The "
                     "CSV files hold them in full.",
        "too_wide": "Table “{table}” has {count} columns, more than a spreadsheet sheet "
                    "holds (16,384): it has no .xlsx file; its CSV file holds it in full.",
        "h_time": "How long the links and the package last",
        "links_until": "The download links work until {when}. After that, ask us for new links.",
        "package_until": "We keep this package until {when}; then it is deleted for good.",
        "package_kept": "We keep this package for the retention period of your contract; ask "
                        "us for new links while it lasts.",
        "archive_hint": "If your browser saves each file separately and loses the folders, "
                        "download {archive} instead: it holds every file in its folder.",
        "h_tech": "For technical staff",
        "tech": "datapackage.json describes every file in the Frictionless Data Package "
                "format: field types, primary keys, relations between tables, sizes and "
                "checksums. Readers of the CSV files must tell an empty unquoted field (no "
                "value) from \"\" (an empty text).",
        "footer": "Export {export_id} of {tenant}, created on {created}.",
    },
    "fr": {
        "title": "Votre export de données",
        "intro": "Ce paquet contient les données de {tenant} telles qu'elles étaient le "
                 "{created}. Ce guide explique ce qu'il contient, comment l'ouvrir et comment "
                 "le vérifier.",
        "h_inside": "Contenu",
        "inside_intro": "Chaque table est fournie deux fois : en classeur de tableur (.xlsx), "
                        "le plus simple à ouvrir, et en fichier CSV, l'original exact pour les "
                        "programmes et pour un nouveau prestataire.",
        "col_file": "Fichier", "col_content": "Contenu", "col_size": "Taille",
        "col_sha": "Somme de contrôle SHA-256",
        "kind_table": "Table « {table} », {count} lignes, en CSV",
        "kind_workbook": "Table « {table} » en classeur de tableur",
        "kind_index": "Liste de vos documents déposés ({count}) : nom d'origine, date de dépôt "
                      "et fichier ZIP qui contient chacun",
        "kind_documents": "Vos documents déposés (fichier ZIP)",
        "kind_manifest": "Description technique de chaque fichier, pour les programmes",
        "kind_archive": "Tous les fichiers du paquet dans un seul fichier ZIP, avec leurs "
                        "dossiers",
        "kind_other": "Autre fichier",
        "size": "{human} ({exact} {unit})",
        "kind_table_one": "Table « {table} », 1 ligne, en CSV",
        "kind_index_one": "Liste de vos documents déposés (1) : nom d'origine, date de dépôt et "
                          "fichier ZIP qui le contient",
        "orphans_one": "1 ligne de la table « {table} » n'appartient à aucun client ; elle ne "
                       "figure dans l'export de personne.",
        "cross_one": "1 ligne de la table « {table} » relie vos données à celles d'un autre "
                     "client ; elle ne figure dans l'export de personne.",
        "missing_documents_one": "1 document figure dans documents/index.csv avec le statut "
                                 "« missing » : la plateforme a encore sa fiche, mais plus son "
                                 "fichier.",
        "truncated_one": "1 texte dépasse ce qu'une cellule de tableur peut contenir (32 767 "
                         "caractères) : dans les fichiers .xlsx, il est coupé et se termine "
                         "par « […] ». Les fichiers CSV le contiennent en entier.",
        "h_open": "Ouvrir les tables dans un tableur",
        "open_xlsx": "Le plus simple : ouvrez les fichiers .xlsx du dossier data avec Excel, "
                     "LibreOffice Calc, Numbers ou tout autre tableur. Les textes, nombres et "
                     "dates s'affichent exactement comme sur la plateforme. Une très longue "
                     "table continue sur d'autres feuilles du même classeur.",
        "open_csv": "Pour utiliser plutôt les fichiers CSV, importez-les sans conversion :",
        "open_lo": "LibreOffice Calc : Fichier → Ouvrir, choisissez le fichier .csv. Dans la "
                   "boîte « Import de texte », choisissez le jeu de caractères « Unicode "
                   "(UTF-8) », cochez « {sep_name} » comme séparateur, cochez « Formater les "
                   "champs entre guillemets comme texte », puis OK.",
        "open_excel": "Excel : Données → À partir d'un fichier texte/CSV, choisissez le "
                      "fichier .csv. Réglez « Origine du fichier » sur « 65001 : Unicode "
                      "(UTF-8) », le délimiteur sur « {sep_name} » et « Détection du type de "
                      "données » sur « Ne pas détecter les types de données », puis Charger.",
        "csv_rule": "Dans les fichiers CSV, chaque texte est entre guillemets droits, et rien "
                    "d'autre ne l'est : ni les nombres, ni les dates, ni les valeurs vrai/faux. "
                    "Un champ vide signifie « pas de valeur » ; deux guillemets (\"\") "
                    "signifient un texte vide.",
        "csv_excel": "Ces fichiers CSV sont préparés pour les tableurs : ils commencent par une "
                     "marque d'ordre des octets, utilisent « {sep} » comme séparateur, et un "
                     "texte qui commencerait par =, +, -, @, une tabulation ou un retour à la "
                     "ligne commence par une apostrophe (') pour qu'aucun tableur ne l'exécute "
                     "comme une formule.",
        "sep_comma": "Virgule", "sep_semicolon": "Point-virgule",
        "h_check": "Vérifier que rien n'est abîmé",
        "check_intro": "Chaque fichier a une somme de contrôle SHA-256, indiquée ci-dessus et "
                       "dans datapackage.json. Calculez-la sur votre copie et comparez : si les "
                       "deux valeurs sont égales, le fichier est exactement celui que nous "
                       "avons écrit.",
        "os_windows": "Windows (PowerShell)", "os_mac": "macOS (Terminal)",
        "os_linux": "Linux (terminal)",
        "h_missing": "Ce qui n'est pas dans l'export, et pourquoi",
        "nothing_missing": "Rien n'a été laissé de côté : toutes les tables qui contiennent vos "
                           "données sont ici.",
        "shared": "Tables communes à tous les clients de la plateforme, qui ne contiennent "
                  "aucune donnée à vous : {tables}.",
        "skipped": "La table « {table} » n'est pas incluse : {reason}.",
        "excluded": "La colonne « {column} » de la table « {table} » n'est pas incluse : elle "
                    "contient des données de sécurité (comme des empreintes de mots de passe) "
                    "qui ne quittent jamais la plateforme.",
        "orphans": "{count} lignes de la table « {table} » n'appartiennent à aucun client ; "
                   "elles ne figurent dans l'export de personne.",
        "cross": "{count} lignes de la table « {table} » relient vos données à celles d'un "
                 "autre client ; elles ne figurent dans l'export de personne.",
        "missing_documents": "{count} documents figurent dans documents/index.csv avec le "
                             "statut « missing » : la plateforme a encore leur fiche, mais "
                             "plus leur fichier.",
        "truncated": "{count} textes dépassent ce qu'une cellule de tableur peut contenir "
                     "(32 767 caractères) : dans les fichiers .xlsx, ils sont coupés et se "
                     "terminent par « […] ». Les fichiers CSV les contiennent en entier.",
        "too_wide": "La table « {table} » a {count} colonnes, plus qu'une feuille de tableur "
                    "n'en contient (16 384) : elle n'a pas de fichier .xlsx ; son fichier CSV "
                    "la contient en entier.",
        "h_time": "Durée de validité des liens et du paquet",
        "links_until": "Les liens de téléchargement fonctionnent jusqu'au {when}. Ensuite, "
                       "demandez-nous de nouveaux liens.",
        "package_until": "Nous conservons ce paquet jusqu'au {when} ; il est ensuite supprimé "
                         "définitivement.",
        "package_kept": "Nous conservons ce paquet pendant la durée de conservation prévue par "
                        "votre contrat ; demandez-nous de nouveaux liens pendant ce temps.",
        "archive_hint": "Si votre navigateur enregistre chaque fichier à part et perd les "
                        "dossiers, téléchargez plutôt {archive} : il contient chaque fichier "
                        "dans son dossier.",
        "h_tech": "Pour les équipes techniques",
        "tech": "datapackage.json décrit chaque fichier au format Frictionless Data Package : "
                "types des champs, clés primaires, relations entre tables, tailles et sommes "
                "de contrôle. Un lecteur des fichiers CSV doit distinguer un champ vide sans "
                "guillemets (pas de valeur) de \"\" (un texte vide).",
        "footer": "Export {export_id} de {tenant}, créé le {created}.",
    },
    "de": {
        "title": "Ihr Datenexport",
        "intro": "Dieses Paket enthält die Daten von {tenant} mit dem Stand vom {created}. "
                 "Diese Anleitung erklärt, was es enthält, wie Sie es öffnen und wie Sie es "
                 "prüfen.",
        "h_inside": "Inhalt",
        "inside_intro": "Jede Tabelle liegt zweimal bei: als Arbeitsmappe (.xlsx), am "
                        "einfachsten zu öffnen, und als CSV-Datei, das genaue Original für "
                        "Programme und für einen neuen Anbieter.",
        "col_file": "Datei", "col_content": "Inhalt", "col_size": "Größe",
        "col_sha": "SHA-256-Prüfsumme",
        "kind_table": "Tabelle „{table}“, {count} Zeilen, als CSV",
        "kind_workbook": "Tabelle „{table}“ als Arbeitsmappe",
        "kind_index": "Liste Ihrer hochgeladenen Dokumente ({count}): ursprünglicher Name, "
                      "Datum des Hochladens und die ZIP-Datei, die es enthält",
        "kind_documents": "Ihre hochgeladenen Dokumente (ZIP-Datei)",
        "kind_manifest": "Technische Beschreibung aller Dateien, für Programme",
        "kind_archive": "Alle Dateien des Pakets in einer ZIP-Datei, mit ihren Ordnern",
        "kind_other": "Weitere Datei",
        "size": "{human} ({exact} {unit})",
        "kind_table_one": "Tabelle „{table}“, 1 Zeile, als CSV",
        "kind_index_one": "Liste Ihrer hochgeladenen Dokumente (1): ursprünglicher Name, Datum "
                          "des Hochladens und die ZIP-Datei, die es enthält",
        "orphans_one": "1 Zeile der Tabelle „{table}“ gehört keinem Kunden; sie ist in keinem "
                       "Export.",
        "cross_one": "1 Zeile der Tabelle „{table}“ verbindet Ihre Daten mit denen eines "
                     "anderen Kunden; sie ist in keinem Export.",
        "missing_documents_one": "1 Dokument steht in documents/index.csv mit dem Status "
                                 "„missing“: Die Plattform hat noch seinen Eintrag, aber nicht "
                                 "mehr seine Datei.",
        "truncated_one": "1 Text ist länger, als eine Zelle fassen kann (32.767 Zeichen): In "
                         "den .xlsx-Dateien ist er gekürzt und endet mit „[…]“. Die CSV-Dateien "
                         "enthalten ihn vollständig.",
        "h_open": "Die Tabellen in einer Tabellenkalkulation öffnen",
        "open_xlsx": "Am einfachsten: Öffnen Sie die .xlsx-Dateien im Ordner data mit Excel, "
                     "LibreOffice Calc, Numbers oder einer anderen Tabellenkalkulation. Texte, "
                     "Zahlen und Daten erscheinen genau so wie auf der Plattform. Eine sehr "
                     "lange Tabelle wird auf weiteren Blättern derselben Arbeitsmappe "
                     "fortgesetzt.",
        "open_csv": "Wenn Sie lieber die CSV-Dateien verwenden, importieren Sie sie so, dass "
                    "nichts umgewandelt wird:",
        "open_lo": "LibreOffice Calc: Datei → Öffnen, wählen Sie die .csv-Datei. Stellen Sie "
                   "im Dialog „Textimport“ den Zeichensatz „Unicode (UTF-8)“ ein, kreuzen Sie "
                   "„{sep_name}“ als Trennzeichen an, kreuzen Sie „Felder in Anführungszeichen "
                   "als Text formatieren“ an, dann OK.",
        "open_excel": "Excel: Daten → Aus Text/CSV, wählen Sie die .csv-Datei. Stellen Sie "
                      "„Dateiursprung“ auf „65001: Unicode (UTF-8)“, das Trennzeichen auf "
                      "„{sep_name}“ und „Datentyperkennung“ auf „Datentypen nicht erkennen“, "
                      "dann Laden.",
        "csv_rule": "In den CSV-Dateien steht jeder Text in doppelten Anführungszeichen, und "
                    "nichts anderes: Zahlen, Daten und Wahr/Falsch-Werte nicht. Ein leeres Feld "
                    "bedeutet „kein Wert“; zwei Anführungszeichen (\"\") bedeuten einen leeren "
                    "Text.",
        "csv_excel": "Diese CSV-Dateien sind für Tabellenkalkulationen vorbereitet: Sie "
                     "beginnen mit einer Byte-Order-Mark, verwenden „{sep}“ als Trennzeichen, "
                     "und ein Text, der mit =, +, -, @, einem Tabulator oder einem "
                     "Zeilenumbruch beginnen würde, beginnt mit einem Apostroph ('), damit "
                     "keine Tabellenkalkulation ihn als Formel ausführt.",
        "sep_comma": "Komma", "sep_semicolon": "Semikolon",
        "h_check": "Prüfen, dass nichts beschädigt ist",
        "check_intro": "Jede Datei hat eine SHA-256-Prüfsumme, oben und in datapackage.json "
                       "aufgeführt. Berechnen Sie sie für Ihre Kopie und vergleichen Sie: Sind "
                       "beide Werte gleich, ist die Datei genau so, wie wir sie geschrieben "
                       "haben.",
        "os_windows": "Windows (PowerShell)", "os_mac": "macOS (Terminal)",
        "os_linux": "Linux (Terminal)",
        "h_missing": "Was nicht im Export ist, und warum",
        "nothing_missing": "Nichts wurde ausgelassen: Jede Tabelle mit Ihren Daten ist hier.",
        "shared": "Tabellen, die alle Kunden der Plattform gemeinsam nutzen und keine Daten "
                  "von Ihnen enthalten: {tables}.",
        "skipped": "Die Tabelle „{table}“ ist nicht enthalten: {reason}.",
        "excluded": "Die Spalte „{column}“ der Tabelle „{table}“ ist nicht enthalten: Sie "
                    "enthält Sicherheitsdaten (etwa Passwort-Hashes), die die Plattform nie "
                    "verlassen.",
        "orphans": "{count} Zeilen der Tabelle „{table}“ gehören keinem Kunden; sie sind in "
                   "keinem Export.",
        "cross": "{count} Zeilen der Tabelle „{table}“ verbinden Ihre Daten mit denen eines "
                 "anderen Kunden; sie sind in keinem Export.",
        "missing_documents": "{count} Dokumente stehen in documents/index.csv mit dem Status "
                             "„missing“: Die Plattform hat noch ihren Eintrag, aber nicht mehr "
                             "ihre Datei.",
        "truncated": "{count} Texte sind länger, als eine Zelle fassen kann (32.767 Zeichen): "
                     "In den .xlsx-Dateien sind sie gekürzt und enden mit „[…]“. Die "
                     "CSV-Dateien enthalten sie vollständig.",
        "too_wide": "Die Tabelle „{table}“ hat {count} Spalten, mehr als ein Tabellenblatt "
                    "fasst (16.384): Sie hat keine .xlsx-Datei; ihre CSV-Datei enthält sie "
                    "vollständig.",
        "h_time": "Wie lange die Links und das Paket gelten",
        "links_until": "Die Download-Links funktionieren bis {when}. Danach bitten Sie uns um "
                       "neue Links.",
        "package_until": "Wir bewahren dieses Paket bis {when} auf; danach wird es endgültig "
                         "gelöscht.",
        "package_kept": "Wir bewahren dieses Paket für die in Ihrem Vertrag vorgesehene Frist "
                        "auf; bitten Sie uns in dieser Zeit um neue Links.",
        "archive_hint": "Wenn Ihr Browser jede Datei einzeln speichert und die Ordner "
                        "verloren gehen, laden Sie stattdessen {archive} herunter: Es enthält "
                        "jede Datei in ihrem Ordner.",
        "h_tech": "Für technisches Personal",
        "tech": "datapackage.json beschreibt jede Datei im Format Frictionless Data Package: "
                "Feldtypen, Primärschlüssel, Beziehungen zwischen Tabellen, Größen und "
                "Prüfsummen. Wer die CSV-Dateien liest, muss ein leeres Feld ohne "
                "Anführungszeichen (kein Wert) von \"\" (leerer Text) unterscheiden.",
        "footer": "Export {export_id} von {tenant}, erstellt am {created}.",
    },
}
