"""The phrase tables of the fine-tuning data, per language: questions asked of a fact (ASK), the same
pointing back with "it" (ASK_BACK), "can I go inside?" (ASK_INSIDE), requests no tour text answers
(UNANSWERABLE), the answers composed from a fact (COMPOSE), and "I don't know" (DONT_KNOW).

`{name}` is the attraction's name in that language; ftdata fills them in.
"""

__all__ = ["DONT_KNOW", "ASK", "ASK_BACK", "ASK_INSIDE", "UNANSWERABLE", "COMPOSE"]

# What the system prompt tells the model to say when the sources do not hold the answer.
DONT_KNOW = {"en": "I don't know.", "fr": "Je ne sais pas.", "de": "Das weiß ich nicht.", "es": "No lo sé.",
             "it": "Non lo so.", "pt": "Não sei.", "nl": "Dat weet ik niet.", "zh": "我不知道。", "ja": "わかりません。",
             "ko": "모르겠습니다."}

# Questions for a fact, two wordings per language ({name} is the attraction's name in that language).
ASK = {
    "built": {
        "en": ["When was {name} built?", "How old is {name}? When was it constructed?"],
        "fr": ["Quand {name} a-t-il été construit ?", "De quand date {name} ?"],
        "de": ["Wann wurde {name} gebaut?", "Aus welchem Jahr stammt {name}?"],
        "es": ["¿Cuándo se construyó {name}?", "¿De qué año es {name}?"],
        "it": ["Quando è stato costruito {name}?", "Di che anno è {name}?"],
        "zh": ["{name}是什么时候建造的？", "{name}建于哪一年？"],
        "ja": ["{name}はいつ建てられましたか？", "{name}は何年にできましたか？"],
    },
    "height": {
        "en": ["How tall is {name}?", "What is the height of {name}?"],
        "fr": ["Quelle est la hauteur de {name} ?", "{name} mesure combien de mètres ?"],
        "de": ["Wie hoch ist {name}?", "Wie viele Meter misst {name}?"],
        "es": ["¿Qué altura tiene {name}?", "¿Cuántos metros mide {name}?"],
        "it": ["Quanto è alto {name}?", "Qual è l'altezza di {name}?"],
        "zh": ["{name}有多高？", "{name}的高度是多少？"],
        "ja": ["{name}の高さはどのくらいですか？", "{name}は何メートルありますか？"],
    },
    "architect": {
        "en": ["Who designed {name}?", "Who was the architect of {name}?"],
        "fr": ["Qui a conçu {name} ?", "Qui est l'architecte de {name} ?"],
        "de": ["Wer hat {name} entworfen?", "Wer war der Architekt von {name}?"],
        "es": ["¿Quién diseñó {name}?", "¿Quién fue el arquitecto de {name}?"],
        "it": ["Chi ha progettato {name}?", "Chi è l'architetto di {name}?"],
        "zh": ["{name}是谁设计的？", "{name}的建筑师是谁？"],
        "ja": ["{name}を設計したのは誰ですか？", "{name}の建築家は誰ですか？"],
    },
}

# The same questions pointing back at the subject of the conversation ("it").
ASK_BACK = {
    "built": {"en": "When was it built?", "fr": "Quand a-t-il été construit ?", "de": "Wann wurde es gebaut?",
              "es": "¿Y cuándo se construyó eso?", "it": "Quando è stato costruito questo?", "zh": "它是什么时候建造的？",
              "ja": "それはいつ建てられましたか？"},
    "height": {"en": "And how tall is it?", "fr": "Et quelle est sa hauteur ?", "de": "Und wie hoch ist es?",
               "es": "¿Y qué altura tiene eso?", "it": "E quanto è alto questo?", "zh": "它有多高？",
               "ja": "それの高さはどのくらいですか？"},
    "architect": {"en": "Who designed it?", "fr": "Qui l'a conçu ?", "de": "Wer hat es entworfen?",
                  "es": "¿Y quién diseñó eso?", "it": "Chi ha progettato questo?", "zh": "它是谁设计的？",
                  "ja": "それを設計したのは誰ですか？"},
}

# "Can I go inside?" — the product's own question, answered from the attraction's `inside` fact as
# the tour writes it in the visitor's language (a fact written only in English is not used: the
# answer would be English). Run 11, trained without these, declined it in five languages of six.
ASK_INSIDE = {
    "en": ["Can I go inside {name}?", "Is it possible to visit {name} inside?"],
    "fr": ["Peut-on entrer dans {name} ?", "Est-ce qu'on peut visiter l'intérieur de {name} ?"],
    "de": ["Kann man {name} von innen besichtigen?", "Darf man in {name} hineingehen?"],
    "es": ["¿Se puede entrar en {name}?", "¿Se puede visitar {name} por dentro?"],
    "it": ["Si può entrare in {name}?", "Si può visitare l'interno di {name}?"],
    "zh": ["可以进入{name}里面参观吗？", "{name}里面能参观吗？"],
    "ja": ["{name}の中に入れますか？", "{name}は中を見学できますか？"],
}

# Requests a tour text does not answer; kept only when the attraction's texts indeed lack them.
UNANSWERABLE = {
    "en": ["What is the Wi-Fi password at {name}?", "What is the phone number of {name}?",
           "Who is the current director of {name}?", "How much does parking cost near {name}?",
           "What is on the menu of the café at {name}?", "What is the email address of {name}?"],
    "fr": ["Quel est le mot de passe du wifi à {name} ?", "Quel est le numéro de téléphone de {name} ?",
           "Qui est le directeur actuel de {name} ?", "Combien coûte le parking près de {name} ?",
           "Qu'y a-t-il au menu du café de {name} ?"],
    "de": ["Wie lautet das WLAN-Passwort in {name}?", "Wie ist die Telefonnummer von {name}?",
           "Wer ist der aktuelle Direktor von {name}?", "Was kostet das Parken bei {name}?",
           "Was steht auf der Speisekarte des Cafés in {name}?"],
    "es": ["¿Cuál es la contraseña del wifi en {name}?", "¿Cuál es el número de teléfono de {name}?",
           "¿Quién es el director actual de {name}?", "¿Cuánto cuesta el aparcamiento cerca de {name}?",
           "¿Qué hay en el menú de la cafetería de {name}?"],
    "it": ["Qual è la password del wifi a {name}?", "Qual è il numero di telefono di {name}?",
           "Chi è l'attuale direttore di {name}?", "Quanto costa il parcheggio vicino a {name}?"],
    "zh": ["{name}的无线网密码是什么？", "{name}的电话号码是多少？", "{name}现在的馆长是谁？",
           "{name}附近停车多少钱？", "{name}咖啡馆的菜单上有什么？"],
    "ja": ["{name}のWi-Fiのパスワードは何ですか？", "{name}の電話番号を教えてください。", "{name}の今の館長は誰ですか？",
           "{name}の近くの駐車料金はいくらですか？", "{name}のカフェのメニューには何がありますか？"],
}

# Short answers composed from the fact, in the style of the system prompt's worked example ("The Old
# Mill was built in 1820 [1]."): the subject, the asked fact and the source number, nothing else.
# Wordings avoid gender agreement with the attraction's name (fr/es/it).
COMPOSE = {
    "built": {
        "en": ("{name} was built in {a}.", "{name} was built between {a} and {b}."),
        "fr": ("{name} date de {a}.", "{name} a vu le jour entre {a} et {b}."),
        "de": ("{name} wurde {a} erbaut.", "{name} wurde von {a} bis {b} erbaut."),
        "es": ("{name} se construyó en {a}.", "{name} se construyó entre {a} y {b}."),
        "it": ("{name} risale al {a}.", "{name} vide la luce tra il {a} e il {b}."),
        "zh": ("{name}建于{a}年。", "{name}于{a}年动工，{b}年建成。"),
        "ja": ("{name}は{a}年に建てられました。", "{name}は{a}年に着工し、{b}年に完成しました。"),
    },
    "height": {
        "en": ("{name} is {h} m tall.",), "fr": ("{name} mesure {h} m de haut.",), "de": ("{name} ist {h} m hoch.",),
        "es": ("{name} mide {h} m de altura.",), "it": ("{name} misura {h} m di altezza.",),
        "zh": ("{name}高{h}米。",), "ja": ("{name}の高さは{h}メートルです。",),
    },
    "architect": {
        "en": ("{name} was designed by {who}.",), "fr": ("{name} est l'œuvre de {who}.",),
        "de": ("{name} wurde von {who} entworfen.",), "es": ("{name} es obra de {who}.",),
        "it": ("{name} è opera di {who}.",), "zh": ("{name}由{who}设计。",), "ja": ("{name}は{who}が設計しました。",),
    },
}

_AND = {"en": " and ", "fr": " et ", "de": " und ", "es": " y ", "it": " e ", "zh": "和", "ja": "と"}
