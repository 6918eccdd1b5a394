"""What the guide says to a visitor about their input (a recording, a photo) or about itself, in
their language. `GuideError.say(key, **values)` raises one; `GuideError.visitor(lang)` renders it.

Languages without a line here get the English one; the lines are our own words.
"""

from __future__ import annotations

__all__ = ["MESSAGES", "message", "duration"]

MESSAGES: dict[str, dict[str, str]] = {
    "audio_not_audio": {
        "en": "I couldn't play that recording: it isn't an audio file I can read. Please try recording your "
              "question again.",
        "fr": "Je n'ai pas pu lire cet enregistrement : ce n'est pas un fichier audio que je sais lire. Veuillez "
              "enregistrer votre question à nouveau.",
        "de": "Diese Aufnahme kann ich nicht abspielen: Es ist keine Audiodatei, die ich lesen kann. Bitte nehmen "
              "Sie Ihre Frage noch einmal auf.",
        "es": "No he podido reproducir esa grabación: no es un archivo de audio que sepa leer. Por favor, grabe "
              "su pregunta de nuevo.",
        "it": "Non riesco a riprodurre questa registrazione: non è un file audio che so leggere. Per favore, "
              "registra di nuovo la domanda.",
        "zh": "我无法播放这段录音：它不是我能读取的音频文件。请重新录制您的问题。",
        "ja": "この録音は再生できません。読み取れる音声ファイルではありません。もう一度質問を録音してください。",
    },
    "audio_empty": {
        "en": "The recording is empty. Please hold the microphone button while you speak.",
        "fr": "L'enregistrement est vide. Maintenez le bouton du micro pendant que vous parlez.",
        "de": "Die Aufnahme ist leer. Bitte halten Sie die Mikrofontaste gedrückt, während Sie sprechen.",
        "es": "La grabación está vacía. Mantenga pulsado el botón del micrófono mientras habla.",
        "it": "La registrazione è vuota. Tieni premuto il pulsante del microfono mentre parli.",
        "zh": "录音是空的。说话时请按住麦克风按钮。",
        "ja": "録音が空です。話している間、マイクのボタンを押し続けてください。",
    },
    "audio_silent": {
        "en": "That recording has no sound in it. Please record your question again.",
        "fr": "Ce fichier ne contient aucun son. Veuillez enregistrer votre question à nouveau.",
        "de": "Diese Datei enthält keinen Ton. Bitte nehmen Sie Ihre Frage noch einmal auf.",
        "es": "Ese archivo no tiene sonido. Por favor, grabe su pregunta de nuevo.",
        "it": "Questo file non contiene suoni. Per favore, registra di nuovo la domanda.",
        "zh": "这个文件里没有声音。请重新录制您的问题。",
        "ja": "このファイルには音が入っていません。もう一度質問を録音してください。",
    },
    "audio_missing": {
        "en": "I couldn't find the recording {name!r}. Please record your question again.",
        "fr": "Je ne trouve pas l'enregistrement {name!r}. Veuillez enregistrer votre question à nouveau.",
        "de": "Ich finde die Aufnahme {name!r} nicht. Bitte nehmen Sie Ihre Frage noch einmal auf.",
        "es": "No encuentro la grabación {name!r}. Por favor, grabe su pregunta de nuevo.",
        "it": "Non trovo la registrazione {name!r}. Per favore, registra di nuovo la domanda.",
        "zh": "我找不到录音 {name!r}。请重新录制您的问题。",
        "ja": "録音 {name!r} が見つかりません。もう一度質問を録音してください。",
    },
    "audio_too_long": {
        "en": "That recording is {length} long; please keep your question under {limit} seconds.",
        "fr": "Cet enregistrement dure {length} ; posez votre question en moins de {limit} secondes.",
        "de": "Diese Aufnahme ist {length} lang; bitte fassen Sie Ihre Frage in weniger als {limit} Sekunden.",
        "es": "Esa grabación dura {length}; haga su pregunta en menos de {limit} segundos.",
        "it": "Questa registrazione dura {length}; fai la domanda in meno di {limit} secondi.",
        "zh": "这段录音长达{length}；请在{limit}秒内说完您的问题。",
        "ja": "この録音は{length}あります。質問は{limit}秒以内にしてください。",
    },
    "photo_empty": {
        "en": "The photo is empty. Please send it again.",
        "fr": "La photo est vide. Veuillez l'envoyer à nouveau.",
        "de": "Das Foto ist leer. Bitte senden Sie es noch einmal.",
        "es": "La foto está vacía. Por favor, envíela de nuevo.",
        "it": "La foto è vuota. Per favore, inviala di nuovo.",
        "zh": "照片是空的。请重新发送。",
        "ja": "写真が空です。もう一度送ってください。",
    },
    "photo_too_large": {
        "en": "That photo is far too large for me. Please send a smaller picture.",
        "fr": "Cette photo est bien trop grande pour moi. Veuillez envoyer une image plus petite.",
        "de": "Dieses Foto ist viel zu groß für mich. Bitte senden Sie ein kleineres Bild.",
        "es": "Esa foto es demasiado grande para mí. Por favor, envíe una imagen más pequeña.",
        "it": "Questa foto è troppo grande per me. Per favore, invia un'immagine più piccola.",
        "zh": "这张照片太大了，我处理不了。请发送一张小一些的图片。",
        "ja": "この写真は大きすぎます。もっと小さい画像を送ってください。",
    },
    "photo_not_a_photo": {
        "en": "That doesn't look like a photo I can read. Please send a JPEG or PNG picture.",
        "fr": "Cela ne ressemble pas à une photo que je sais lire. Veuillez envoyer une image JPEG ou PNG.",
        "de": "Das sieht nicht nach einem Foto aus, das ich lesen kann. Bitte senden Sie ein JPEG- oder PNG-Bild.",
        "es": "Eso no parece una foto que sepa leer. Por favor, envíe una imagen JPEG o PNG.",
        "it": "Non sembra una foto che so leggere. Per favore, invia un'immagine JPEG o PNG.",
        "zh": "这看起来不是我能读取的照片。请发送 JPEG 或 PNG 图片。",
        "ja": "読み取れる写真ではないようです。JPEG か PNG の画像を送ってください。",
    },
    "photo_damaged": {
        "en": "The photo seems to be damaged or cut off. Please take or send it again.",
        "fr": "La photo semble abîmée ou coupée. Veuillez la reprendre ou l'envoyer à nouveau.",
        "de": "Das Foto scheint beschädigt oder abgeschnitten zu sein. Bitte nehmen oder senden Sie es noch einmal.",
        "es": "La foto parece dañada o cortada. Por favor, tómela o envíela de nuevo.",
        "it": "La foto sembra danneggiata o tagliata. Per favore, scattala o inviala di nuovo.",
        "zh": "照片似乎已损坏或不完整。请重新拍摄或发送。",
        "ja": "写真が壊れているか、途中で切れているようです。もう一度撮るか送ってください。",
    },
    "photo_missing": {
        "en": "I couldn't find the photo {name!r}. Please send it again.",
        "fr": "Je ne trouve pas la photo {name!r}. Veuillez l'envoyer à nouveau.",
        "de": "Ich finde das Foto {name!r} nicht. Bitte senden Sie es noch einmal.",
        "es": "No encuentro la foto {name!r}. Por favor, envíela de nuevo.",
        "it": "Non trovo la foto {name!r}. Per favore, inviala di nuovo.",
        "zh": "我找不到照片 {name!r}。请重新发送。",
        "ja": "写真 {name!r} が見つかりません。もう一度送ってください。",
    },
    "photo_unreadable": {
        "en": "I couldn't read the photo {name!r}. Please send it again.",
        "fr": "Je n'arrive pas à lire la photo {name!r}. Veuillez l'envoyer à nouveau.",
        "de": "Ich kann das Foto {name!r} nicht lesen. Bitte senden Sie es noch einmal.",
        "es": "No puedo leer la foto {name!r}. Por favor, envíela de nuevo.",
        "it": "Non riesco a leggere la foto {name!r}. Per favore, inviala di nuovo.",
        "zh": "我无法读取照片 {name!r}。请重新发送。",
        "ja": "写真 {name!r} を読み取れません。もう一度送ってください。",
    },
    "photo_too_small": {
        "en": "That picture is too small to recognise anything. Please send a larger photo.",
        "fr": "Cette image est trop petite pour y reconnaître quoi que ce soit. Veuillez envoyer une photo plus "
              "grande.",
        "de": "Das Bild ist zu klein, um etwas zu erkennen. Bitte senden Sie ein größeres Foto.",
        "es": "Esa imagen es demasiado pequeña para reconocer nada. Por favor, envíe una foto más grande.",
        "it": "L'immagine è troppo piccola per riconoscere qualcosa. Per favore, invia una foto più grande.",
        "zh": "这张图片太小了，无法识别。请发送一张大一些的照片。",
        "ja": "画像が小さすぎて何も認識できません。もっと大きい写真を送ってください。",
    },
    "unsupported_language": {
        "en": "I can't answer in {language} yet; this tour speaks {choices}. Here is my answer in {answer}.",
        "fr": "Je ne peux pas encore répondre en {language} ; cette visite parle {choices}. Voici ma réponse en "
              "{answer}.",
        "de": "Auf {language} kann ich noch nicht antworten; diese Tour spricht {choices}. Hier ist meine Antwort "
              "auf {answer}.",
        "es": "Todavía no puedo responder en {language}; este recorrido habla {choices}. Esta es mi respuesta en "
              "{answer}.",
        "it": "Non posso ancora rispondere in {language}; questo tour parla {choices}. Ecco la mia risposta in "
              "{answer}.",
        "zh": "我还不能用{language}回答；本导览支持{choices}。以下是我用{answer}给出的回答。",
        "ja": "{language}ではまだお答えできません。このツアーの言語は{choices}です。{answer}でお答えします。",
    },
    "llm_missing": {
        "en": "The answer model is not installed here, so I quote the best sentence from my sources instead.",
        "fr": "Le modèle de réponse n'est pas installé ici : je cite donc la meilleure phrase de mes sources.",
        "de": "Das Antwortmodell ist hier nicht installiert, deshalb zitiere ich den passendsten Satz aus meinen "
              "Quellen.",
        "es": "El modelo de respuestas no está instalado aquí, así que cito la mejor frase de mis fuentes.",
        "it": "Il modello delle risposte non è installato qui, quindi cito la frase migliore delle mie fonti.",
        "zh": "这里没有安装回答模型，所以我引用资料中最相关的一句话。",
        "ja": "回答モデルがインストールされていないため、資料の中から最も合う一文を引用します。",
    },
    "fallback": {
        "en": "Running on a fallback here: {detail}",
        "fr": "Fonctionnement de secours : {detail}",
        "de": "Hier läuft eine Ersatzlösung: {detail}",
        "es": "Funcionando con una alternativa: {detail}",
        "it": "In funzione con una soluzione di riserva: {detail}",
        "zh": "正在使用备用方案：{detail}",
        "ja": "代替の仕組みで動作しています：{detail}",
    },
}

_UNITS = {  # (seconds, minutes, hours) as a visitor would say a recording's length
    "en": ("{n} seconds", "{n} minutes", "{n} hours"),
    "fr": ("{n} secondes", "{n} minutes", "{n} heures"),
    "de": ("{n} Sekunden", "{n} Minuten", "{n} Stunden"),
    "es": ("{n} segundos", "{n} minutos", "{n} horas"),
    "it": ("{n} secondi", "{n} minuti", "{n} ore"),
    "zh": ("{n}秒", "{n}分钟", "{n}小时"),
    "ja": ("{n}秒", "{n}分", "{n}時間"),
}


def duration(seconds: float, lang: str = "en", *, at_least: bool = False) -> str:
    """'70 seconds', '10 Minuten', '2小时': how long a recording is, in `lang`."""
    units = _UNITS.get(lang, _UNITS["en"])
    if seconds < 120:
        text = units[0].format(n=f"{seconds:.0f}")
    elif seconds < 2 * 3600:
        text = units[1].format(n=f"{seconds / 60:.0f}")
    else:
        text = units[2].format(n=f"{seconds / 3600:.0f}")
    if at_least:
        text = {"en": "over {}", "fr": "plus de {}", "de": "über {}", "es": "más de {}", "it": "più di {}",
                "zh": "超过{}", "ja": "{}以上"}.get(lang, "over {}").format(text)
    return text


def message(key: str, lang: str, **values) -> str:
    """The message `key` in `lang` (English where it has none), filled with `values`. A value that is
    itself language-dependent is given as a callable of the language (e.g. a duration)."""
    table = MESSAGES[key]
    filled = {k: v(lang if lang in table else "en") if callable(v) else v for k, v in values.items()}
    return table.get(lang, table["en"]).format(**filled)
