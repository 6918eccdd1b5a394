"""Languages: names, fact labels, the guide's fixed phrases per language, and language identification."""

from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["LANGUAGES", "language_name", "fact_label", "phrase", "detect_language", "fold"]

# code -> (English name, native name)
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("English", "English"),
    "fr": ("French", "français"),
    "de": ("German", "Deutsch"),
    "es": ("Spanish", "español"),
    "it": ("Italian", "italiano"),
    "pt": ("Portuguese", "português"),
    "nl": ("Dutch", "Nederlands"),
    "zh": ("Chinese", "中文"),
    "ja": ("Japanese", "日本語"),
    "ko": ("Korean", "한국어"),
}

# languages recognised only to say "I can't answer in ... yet" (dialogue.EXTRA_LANGUAGES): names, no phrases
OTHER_LANGUAGES: dict[str, tuple[str, str]] = {
    "pl": ("Polish", "polski"),
    "tr": ("Turkish", "Türkçe"),
    "sv": ("Swedish", "svenska"),
    "fi": ("Finnish", "suomi"),
    "da": ("Danish", "dansk"),
    "nb": ("Norwegian", "norsk"),
    "cs": ("Czech", "čeština"),
    "hu": ("Hungarian", "magyar"),
    "ro": ("Romanian", "română"),
    "sw": ("Swahili", "Kiswahili"),
    "id": ("Indonesian", "Bahasa Indonesia"),
    "vi": ("Vietnamese", "Tiếng Việt"),
}


def language_name(code: str, native: bool = False) -> str:
    names = LANGUAGES.get(code) or OTHER_LANGUAGES.get(code)
    return (names[1] if native else names[0]) if names else code


_FACT_LABELS: dict[str, dict[str, str]] = {
    "built": {"en": "Built", "fr": "Construction", "de": "Erbaut", "es": "Construcción", "it": "Costruzione",
              "pt": "Construção", "nl": "Gebouwd", "zh": "建造年代", "ja": "建設", "ko": "건설"},
    "architect": {"en": "Architect", "fr": "Architecte", "de": "Architekt", "es": "Arquitecto", "it": "Architetto",
                  "pt": "Arquiteto", "nl": "Architect", "zh": "建筑师", "ja": "設計者", "ko": "건축가"},
    "height": {"en": "Height", "fr": "Hauteur", "de": "Höhe", "es": "Altura", "it": "Altezza", "pt": "Altura",
               "nl": "Hoogte", "zh": "高度", "ja": "高さ", "ko": "높이"},
    "address": {"en": "Address", "fr": "Adresse", "de": "Adresse", "es": "Dirección", "it": "Indirizzo",
                "pt": "Endereço", "nl": "Adres", "zh": "地址", "ja": "住所", "ko": "주소"},
    "coordinates": {"en": "Coordinates", "fr": "Coordonnées", "de": "Koordinaten", "es": "Coordenadas",
                    "it": "Coordinate", "pt": "Coordenadas", "nl": "Coördinaten", "zh": "坐标", "ja": "座標",
                    "ko": "좌표"},
    "opening_hours": {"en": "Opening hours", "fr": "Horaires", "de": "Öffnungszeiten", "es": "Horario",
                      "it": "Orari", "pt": "Horário", "nl": "Openingstijden", "zh": "开放时间", "ja": "開館時間",
                      "ko": "운영 시간"},
    "tickets": {"en": "Tickets", "fr": "Billets", "de": "Eintritt", "es": "Entradas", "it": "Biglietti",
                "pt": "Ingressos", "nl": "Tickets", "zh": "门票", "ja": "料金", "ko": "입장료"},
    "inside": {"en": "Going inside", "fr": "Visite intérieure", "de": "Innenbesichtigung", "es": "Visita interior",
               "it": "Visita interna", "pt": "Visita interior", "nl": "Binnen", "zh": "内部参观", "ja": "内部見学",
               "ko": "내부 관람"},
    "metro": {"en": "Metro", "fr": "Métro", "de": "Metro", "es": "Metro", "it": "Metro", "pt": "Metrô",
              "nl": "Metro", "zh": "地铁", "ja": "地下鉄", "ko": "지하철"},
    "accessibility": {"en": "Accessibility", "fr": "Accessibilité", "de": "Barrierefreiheit",
                      "es": "Accesibilidad", "it": "Accessibilità", "pt": "Acessibilidade",
                      "nl": "Toegankelijkheid", "zh": "无障碍", "ja": "バリアフリー", "ko": "접근성"},
    "style": {"en": "Style", "fr": "Style", "de": "Stil", "es": "Estilo", "it": "Stile", "pt": "Estilo",
              "nl": "Stijl", "zh": "风格", "ja": "様式", "ko": "양식"},
    "visit_duration": {"en": "Time to allow", "fr": "Durée de visite", "de": "Besuchsdauer",
                       "es": "Duración de la visita", "it": "Durata della visita", "pt": "Duração da visita",
                       "nl": "Bezoekduur", "zh": "游览时长", "ja": "所要時間", "ko": "관람 시간"},
}


def fact_label(key: str, lang: str) -> str:
    labels = _FACT_LABELS.get(key)
    if labels:
        return labels.get(lang) or labels["en"]
    return key.replace("_", " ").capitalize()


# The guide's fixed phrases. {tour}, {subject}, {language}, {n} are filled in by the caller.
_PHRASES: dict[str, dict[str, str]] = {
    "system": {
        "en": "You are a friendly tour guide in {tour}. Answer the visitor's question in English, in one to "
              "three short sentences, using only the facts in the numbered sources. Put the number of the source "
              "you used in brackets, like [1]. Never guess: if the sources do not contain the answer, reply only: "
              "I don't know.",
        "fr": "Tu es un guide touristique sympathique à {tour}. Réponds à la question du visiteur en français, en "
              "une à trois phrases courtes, uniquement avec les faits des sources numérotées. Indique le numéro de "
              "la source entre crochets, comme [1]. Ne devine jamais : si les sources ne contiennent pas la "
              "réponse, réponds seulement : Je ne sais pas.",
        "de": "Du bist ein freundlicher Stadtführer in {tour}. Beantworte die Frage des Besuchers auf Deutsch, in "
              "ein bis drei kurzen Sätzen, nur mit den Fakten aus den nummerierten Quellen. Nenne die Nummer der "
              "Quelle in eckigen Klammern, etwa [1]. Rate nie: Wenn die Quellen die Antwort nicht enthalten, "
              "antworte nur: Das weiß ich nicht.",
        "es": "Eres un guía turístico amable en {tour}. Responde a la pregunta del visitante en español, en una a "
              "tres frases cortas, usando solo los datos de las fuentes numeradas. Indica el número de la fuente "
              "entre corchetes, como [1]. No adivines nunca: si las fuentes no contienen la respuesta, responde "
              "solo: No lo sé.",
        "it": "Sei una guida turistica cordiale a {tour}. Rispondi alla domanda del visitatore in italiano, in una "
              "o tre frasi brevi, usando solo i fatti delle fonti numerate. Indica il numero della fonte tra "
              "parentesi quadre, come [1]. Non indovinare mai: se le fonti non contengono la risposta, rispondi "
              "solo: Non lo so.",
        "pt": "Você é um guia turístico simpático em {tour}. Responda à pergunta do visitante em português, em uma "
              "a três frases curtas, usando apenas os fatos das fontes numeradas. Indique o número da fonte entre "
              "colchetes, como [1]. Nunca adivinhe: se as fontes não contêm a resposta, responda apenas: Não sei.",
        "nl": "Je bent een vriendelijke gids in {tour}. Beantwoord de vraag van de bezoeker in het Nederlands, in "
              "één tot drie korte zinnen, alleen met de feiten uit de genummerde bronnen. Zet het nummer van de "
              "bron tussen haken, zoals [1]. Gok nooit: als de bronnen het antwoord niet bevatten, antwoord dan "
              "alleen: Dat weet ik niet.",
        "zh": "你是{tour}的一位友好的导游。请用中文回答游客的问题，用一到三句简短的话，只使用编号资料中的事实。"
              "在方括号中注明所用资料的编号，例如[1]。不要猜测：如果资料中没有答案，只回答：我不知道。",
        "ja": "あなたは{tour}の親切な観光ガイドです。訪問者の質問に日本語で、一文から三文の短い文で、番号付きの資料に"
              "ある事実だけを使って答えてください。使った資料の番号を[1]のように角括弧で示してください。推測は"
              "しないでください。資料に答えがない場合は「わかりません」とだけ答えてください。",
        "ko": "당신은 {tour}의 친절한 관광 가이드입니다. 방문객의 질문에 한국어로, 한두 문장으로, 번호가 매겨진 자료의 "
              "사실만 사용하여 답하세요. 사용한 자료 번호를 [1]처럼 대괄호로 표시하세요. 추측하지 마세요. 자료에 답이 "
              "없으면 '모르겠습니다'라고만 답하세요.",
    },
    # one worked example, shown to the model as an earlier exchange: the answer's length, language and [n]
    "example_sources": {
        "en": "[1] Old Mill: The Old Mill was built in 1820 and grinds flour for the bakery next door.",
        "fr": "[1] Vieux Moulin : Le Vieux Moulin a été construit en 1820 et moud la farine de la boulangerie voisine.",
        "de": "[1] Alte Mühle: Die Alte Mühle wurde 1820 gebaut und mahlt das Mehl für die Bäckerei nebenan.",
        "es": "[1] Molino Viejo: El Molino Viejo se construyó en 1820 y muele la harina de la panadería vecina.",
        "it": "[1] Mulino Vecchio: Il Mulino Vecchio fu costruito nel 1820 e macina la farina per il forno accanto.",
        "pt": "[1] Moinho Velho: O Moinho Velho foi construído em 1820 e mói a farinha da padaria ao lado.",
        "nl": "[1] Oude Molen: De Oude Molen werd in 1820 gebouwd en maalt meel voor de bakkerij ernaast.",
        "zh": "[1] 老磨坊：老磨坊建于1820年，为隔壁的面包店磨面粉。",
        "ja": "[1] 古い水車小屋：古い水車小屋は1820年に建てられ、隣のパン屋のために小麦粉をひいています。",
        "ko": "[1] 옛 방앗간: 옛 방앗간은 1820년에 지어졌으며 옆 빵집을 위해 밀가루를 빻습니다.",
    },
    "example_question": {
        "en": "When was the Old Mill built?", "fr": "Quand le Vieux Moulin a-t-il été construit ?",
        "de": "Wann wurde die Alte Mühle gebaut?", "es": "¿Cuándo se construyó el Molino Viejo?",
        "it": "Quando fu costruito il Mulino Vecchio?", "pt": "Quando foi construído o Moinho Velho?",
        "nl": "Wanneer werd de Oude Molen gebouwd?", "zh": "老磨坊是什么时候建的？",
        "ja": "古い水車小屋はいつ建てられましたか？", "ko": "옛 방앗간은 언제 지어졌나요?",
    },
    "example_answer": {
        "en": "The Old Mill was built in 1820 [1].", "fr": "Le Vieux Moulin a été construit en 1820 [1].",
        "de": "Die Alte Mühle wurde 1820 gebaut [1].", "es": "El Molino Viejo se construyó en 1820 [1].",
        "it": "Il Mulino Vecchio fu costruito nel 1820 [1].", "pt": "O Moinho Velho foi construído em 1820 [1].",
        "nl": "De Oude Molen werd in 1820 gebouwd [1].", "zh": "老磨坊建于1820年[1]。",
        "ja": "古い水車小屋は1820年に建てられました[1]。", "ko": "옛 방앗간은 1820년에 지어졌습니다[1].",
    },
    "sources": {"en": "Sources", "fr": "Sources", "de": "Quellen", "es": "Fuentes", "it": "Fonti", "pt": "Fontes",
                "nl": "Bronnen", "zh": "资料", "ja": "資料", "ko": "자료"},
    "question": {"en": "Question", "fr": "Question", "de": "Frage", "es": "Pregunta", "it": "Domanda",
                 "pt": "Pergunta", "nl": "Vraag", "zh": "问题", "ja": "質問", "ko": "질문"},
    "about": {"en": "The visitor is asking about: {subject}", "fr": "Le visiteur parle de : {subject}",
              "de": "Der Besucher fragt nach: {subject}", "es": "El visitante pregunta por: {subject}",
              "it": "Il visitatore chiede di: {subject}", "pt": "O visitante pergunta sobre: {subject}",
              "nl": "De bezoeker vraagt naar: {subject}", "zh": "游客询问的是：{subject}",
              "ja": "訪問者が尋ねているのは：{subject}", "ko": "방문객이 묻는 대상: {subject}"},
    "answer_in": {"en": "Answer in English.", "fr": "Réponds en français.", "de": "Antworte auf Deutsch.",
                  "es": "Responde en español.", "it": "Rispondi in italiano.", "pt": "Responda em português.",
                  "nl": "Antwoord in het Nederlands.", "zh": "请用中文回答。", "ja": "日本語で答えてください。",
                  "ko": "한국어로 답하세요."},
    "refusal": {
        "en": "I'm sorry, my sources about {subject} don't say that, so I'd rather not guess.",
        "fr": "Désolé, mes sources sur {subject} ne le disent pas, et je préfère ne pas deviner.",
        "de": "Das tut mir leid, meine Quellen zu {subject} sagen dazu nichts, und ich möchte nicht raten.",
        "es": "Lo siento, mis fuentes sobre {subject} no lo dicen, y prefiero no adivinar.",
        "it": "Mi dispiace, le mie fonti su {subject} non lo dicono e preferisco non tirare a indovinare.",
        "pt": "Desculpe, as minhas fontes sobre {subject} não dizem isso, e prefiro não adivinhar.",
        "nl": "Sorry, mijn bronnen over {subject} zeggen daar niets over, en ik gok liever niet.",
        "zh": "抱歉，我关于{subject}的资料里没有提到这一点，我不想乱猜。",
        "ja": "申し訳ありませんが、{subject}についての資料にはその情報がないため、推測はしません。",
        "ko": "죄송합니다. {subject}에 관한 자료에는 그 내용이 없어서 추측하지 않겠습니다.",
    },
    "this_tour": {"en": "this tour", "fr": "cette visite", "de": "diese Tour", "es": "este recorrido",
                  "it": "questo tour", "pt": "este passeio", "nl": "deze tour", "zh": "本次游览",
                  "ja": "このツアー", "ko": "이 투어"},
    "empty_question": {
        "en": "Please ask me something about the tour, by typing, speaking or showing a photo.",
        "fr": "Posez-moi une question sur la visite : écrivez, parlez ou montrez une photo.",
        "de": "Stellen Sie mir eine Frage zur Tour – tippen, sprechen oder zeigen Sie ein Foto.",
        "es": "Hágame una pregunta sobre el recorrido: escriba, hable o muestre una foto.",
        "it": "Fammi una domanda sul tour: scrivi, parla o mostrami una foto.",
        "pt": "Faça-me uma pergunta sobre o passeio: escreva, fale ou mostre uma foto.",
        "nl": "Stel me een vraag over de tour: typ, spreek of laat een foto zien.",
        "zh": "请问我关于本次游览的问题：可以打字、说话或展示照片。",
        "ja": "ツアーについて質問してください。入力、音声、写真のどれでもどうぞ。",
        "ko": "투어에 대해 질문해 주세요. 입력, 음성, 사진 모두 가능합니다.",
    },
    "too_long": {
        "en": "That message is too long for me ({n} characters). Please ask a shorter question.",
        "fr": "Ce message est trop long pour moi ({n} caractères). Posez une question plus courte.",
        "de": "Diese Nachricht ist mir zu lang ({n} Zeichen). Bitte stellen Sie eine kürzere Frage.",
        "es": "Ese mensaje es demasiado largo para mí ({n} caracteres). Haga una pregunta más corta.",
        "it": "Questo messaggio è troppo lungo per me ({n} caratteri). Fai una domanda più breve.",
        "pt": "Essa mensagem é longa demais para mim ({n} caracteres). Faça uma pergunta mais curta.",
        "nl": "Dat bericht is te lang voor mij ({n} tekens). Stel een kortere vraag.",
        "zh": "这条消息太长了（{n}个字符）。请问一个简短一些的问题。",
        "ja": "メッセージが長すぎます（{n}文字）。短い質問にしてください。",
        "ko": "메시지가 너무 깁니다({n}자). 더 짧게 질문해 주세요.",
    },
    # a recording the guide is not sure it understood: it says what it heard and asks again
    "heard_unsure": {
        "en": "I'm not sure I heard you right. I understood: “{heard}”. Could you say it again, or type your "
              "question?",
        "fr": "Je ne suis pas sûr d'avoir bien entendu. J'ai compris : « {heard} ». Pouvez-vous répéter, ou écrire "
              "votre question ?",
        "de": "Ich bin nicht sicher, ob ich Sie richtig verstanden habe. Ich habe verstanden: „{heard}“. Könnten Sie "
              "es noch einmal sagen oder Ihre Frage eintippen?",
        "es": "No estoy seguro de haberle entendido bien. Entendí: «{heard}». ¿Puede repetirlo o escribir su "
              "pregunta?",
        "it": "Non sono sicuro di aver capito bene. Ho capito: «{heard}». Puoi ripetere o scrivere la domanda?",
        "pt": "Não tenho certeza de ter entendido bem. Entendi: “{heard}”. Pode repetir ou escrever a sua pergunta?",
        "nl": "Ik weet niet zeker of ik je goed heb verstaan. Ik verstond: ‘{heard}’. Wil je het nog eens zeggen of "
              "je vraag typen?",
        "zh": "我不确定是否听清楚了。我听到的是：“{heard}”。请再说一遍，或者输入您的问题。",
        "ja": "うまく聞き取れたか自信がありません。「{heard}」と聞こえました。もう一度話すか、質問を入力してください。",
        "ko": "제대로 들었는지 확실하지 않습니다. \"{heard}\"(이)라고 들었습니다. 다시 말씀해 주시거나 질문을 입력해 주세요.",
    },
    "not_heard": {
        "en": "I couldn't make out a question in that recording. Could you say it again, or type your question?",
        "fr": "Je n'ai pas compris de question dans cet enregistrement. Pouvez-vous répéter, ou écrire votre "
              "question ?",
        "de": "Ich konnte in der Aufnahme keine Frage verstehen. Könnten Sie es noch einmal sagen oder Ihre Frage "
              "eintippen?",
        "es": "No he podido entender ninguna pregunta en la grabación. ¿Puede repetirla o escribir su pregunta?",
        "it": "Non sono riuscito a capire una domanda nella registrazione. Puoi ripetere o scrivere la domanda?",
        "pt": "Não consegui entender nenhuma pergunta na gravação. Pode repetir ou escrever a sua pergunta?",
        "nl": "Ik kon in de opname geen vraag verstaan. Wil je het nog eens zeggen of je vraag typen?",
        "zh": "我没能从录音中听出问题。请再说一遍，或者输入您的问题。",
        "ja": "録音から質問を聞き取れませんでした。もう一度話すか、質問を入力してください。",
        "ko": "녹음에서 질문을 알아듣지 못했습니다. 다시 말씀해 주시거나 질문을 입력해 주세요.",
    },
    # {language}: the language heard (its own name); {choices}: the tour's languages
    "heard_other_language": {
        "en": "I heard a language this tour does not speak ({language}). Please ask in one of its languages "
              "({choices}), or type your question.",
        "fr": "J'ai entendu une langue que cette visite ne parle pas ({language}). Posez votre question dans l'une "
              "de ses langues ({choices}), ou écrivez-la.",
        "de": "Ich habe eine Sprache gehört, die diese Tour nicht spricht ({language}). Bitte fragen Sie in einer "
              "ihrer Sprachen ({choices}) oder tippen Sie Ihre Frage ein.",
        "es": "He oído un idioma que este recorrido no habla ({language}). Pregunte en uno de sus idiomas "
              "({choices}) o escriba su pregunta.",
        "it": "Ho sentito una lingua che questo tour non parla ({language}). Fai la domanda in una delle sue lingue "
              "({choices}) o scrivila.",
        "pt": "Ouvi uma língua que este passeio não fala ({language}). Pergunte numa das suas línguas ({choices}) "
              "ou escreva a sua pergunta.",
        "nl": "Ik hoorde een taal die deze tour niet spreekt ({language}). Stel je vraag in een van de talen van de "
              "tour ({choices}) of typ hem.",
        "zh": "我听到的语言（{language}）本次游览暂不支持。请用以下语言之一提问（{choices}），或者输入您的问题。",
        "ja": "このツアーが対応していない言語（{language}）が聞こえました。対応言語（{choices}）のいずれかで話すか、"
              "質問を入力してください。",
        "ko": "이 투어가 지원하지 않는 언어({language})로 들렸습니다. 투어의 언어({choices}) 중 하나로 질문하시거나 "
              "질문을 입력해 주세요.",
    },
    # the answer model failed in the middle of an answer (its process died): nothing was answered
    "llm_failed": {
        "en": "The answer model stopped; please ask again in a moment.",
        "fr": "Le modèle de réponse s'est arrêté ; veuillez reposer votre question dans un instant.",
        "de": "Das Antwortmodell ist ausgefallen; bitte fragen Sie in einem Moment noch einmal.",
        "es": "El modelo de respuestas se ha detenido; vuelva a preguntar en un momento.",
        "it": "Il modello delle risposte si è fermato; riprova tra un momento.",
        "pt": "O modelo de respostas parou; pergunte novamente daqui a pouco.",
        "nl": "Het antwoordmodel is gestopt; stel je vraag zo dadelijk opnieuw.",
        "zh": "回答模型停止了运行，请稍后再问一次。",
        "ja": "回答モデルが停止しました。少し待ってから、もう一度質問してください。",
        "ko": "답변 모델이 멈췄습니다. 잠시 후에 다시 질문해 주세요.",
    },
    "speech_failed": {
        "en": "I couldn't speak this answer aloud; it is written above.",
        "fr": "Je n'ai pas pu lire cette réponse à voix haute ; elle est écrite ci-dessus.",
        "de": "Ich konnte diese Antwort nicht vorlesen; sie steht oben.",
        "es": "No he podido leer esta respuesta en voz alta; está escrita arriba.",
        "it": "Non sono riuscito a leggere ad alta voce questa risposta; è scritta qui sopra.",
        "pt": "Não consegui ler esta resposta em voz alta; ela está escrita acima.",
        "nl": "Ik kon dit antwoord niet voorlezen; het staat hierboven.",
        "zh": "我无法朗读这个回答，请看上面的文字。",
        "ja": "この回答を読み上げられませんでした。上の文章をご覧ください。",
        "ko": "이 답변을 소리 내어 읽지 못했습니다. 위에 적힌 내용을 확인해 주세요.",
    },
    "photo_unavailable": {
        "en": "I can't look at photos right now; please ask in words.",
        "fr": "Je ne peux pas regarder de photos pour le moment ; posez votre question avec des mots.",
        "de": "Ich kann gerade keine Fotos ansehen; bitte fragen Sie in Worten.",
        "es": "Ahora mismo no puedo ver fotos; pregúnteme con palabras.",
        "it": "Al momento non posso guardare le foto; fammi la domanda a parole.",
        "pt": "Neste momento não consigo ver fotos; pergunte-me com palavras.",
        "nl": "Ik kan nu geen foto's bekijken; stel je vraag in woorden.",
        "zh": "我现在无法查看照片，请用文字提问。",
        "ja": "今は写真を見ることができません。言葉で質問してください。",
        "ko": "지금은 사진을 볼 수 없습니다. 말로 질문해 주세요.",
    },
    # a photo the recognizer did not accept: what it might be, and what would help (vision.Recognition)
    "photo_unknown": {
        "en": "I don't recognise the place in this photo. Is it one of these: {names}? You can also type its name.",
        "fr": "Je ne reconnais pas le lieu sur cette photo. S'agit-il de l'un de ceux-ci : {names} ? "
              "Vous pouvez aussi écrire son nom.",
        "de": "Ich erkenne den Ort auf diesem Foto nicht. Ist es einer von diesen: {names}? "
              "Sie können den Namen auch eintippen.",
        "es": "No reconozco el lugar de esta foto. ¿Es alguno de estos: {names}? También puede escribir su nombre.",
        "it": "Non riconosco il luogo in questa foto. È uno di questi: {names}? Puoi anche scriverne il nome.",
        "pt": "Não reconheço o lugar desta foto. É um destes: {names}? Também pode escrever o nome.",
        "nl": "Ik herken de plek op deze foto niet. Is het een van deze: {names}? Je kunt ook de naam typen.",
        "zh": "我认不出这张照片里的地方。是以下哪一个：{names}？您也可以直接输入它的名字。",
        "ja": "この写真の場所がわかりません。次のどれかですか：{names}。名前を入力していただいても大丈夫です。",
        "ko": "이 사진 속 장소를 알아보지 못했습니다. 다음 중 하나인가요: {names}? 이름을 입력하셔도 됩니다.",
    },
    "photo_unknown_alone": {
        "en": "I don't recognise the place in this photo. Please type its name or ask about it in words.",
        "fr": "Je ne reconnais pas le lieu sur cette photo. Écrivez son nom ou posez votre question avec des mots.",
        "de": "Ich erkenne den Ort auf diesem Foto nicht. Bitte tippen Sie den Namen ein oder fragen Sie in Worten.",
        "es": "No reconozco el lugar de esta foto. Escriba su nombre o pregúnteme con palabras.",
        "it": "Non riconosco il luogo in questa foto. Scrivine il nome o fammi la domanda a parole.",
        "pt": "Não reconheço o lugar desta foto. Escreva o nome ou pergunte-me com palavras.",
        "nl": "Ik herken de plek op deze foto niet. Typ de naam of stel je vraag in woorden.",
        "zh": "我认不出这张照片里的地方。请输入它的名字，或者用文字提问。",
        "ja": "この写真の場所がわかりません。名前を入力するか、言葉で質問してください。",
        "ko": "이 사진 속 장소를 알아보지 못했습니다. 이름을 입력하시거나 말로 질문해 주세요.",
    },
    "photo_hint_whole-building": {
        "en": "A photo with the whole building in view would help me.",
        "fr": "Une photo où l'on voit tout le bâtiment m'aiderait.",
        "de": "Ein Foto, auf dem das ganze Gebäude zu sehen ist, würde mir helfen.",
        "es": "Me ayudaría una foto en la que se vea todo el edificio.",
        "it": "Mi aiuterebbe una foto in cui si veda l'intero edificio.",
        "pt": "Uma foto com o edifício inteiro à vista me ajudaria.",
        "nl": "Een foto waarop het hele gebouw te zien is, zou me helpen.",
        "zh": "拍下整座建筑的照片会对我有帮助。",
        "ja": "建物全体が写った写真だと助かります。",
        "ko": "건물 전체가 보이는 사진이면 도움이 됩니다.",
    },
    "photo_hint_more-detail": {
        "en": "A sharper, brighter photo that shows the whole building would help me.",
        "fr": "Une photo plus nette et plus lumineuse, montrant tout le bâtiment, m'aiderait.",
        "de": "Ein schärferes, helleres Foto, das das ganze Gebäude zeigt, würde mir helfen.",
        "es": "Me ayudaría una foto más nítida y luminosa que muestre todo el edificio.",
        "it": "Mi aiuterebbe una foto più nitida e luminosa che mostri l'intero edificio.",
        "pt": "Uma foto mais nítida e clara, com o edifício inteiro, me ajudaria.",
        "nl": "Een scherpere, lichtere foto van het hele gebouw zou me helpen.",
        "zh": "更清晰、更明亮并拍下整座建筑的照片会对我有帮助。",
        "ja": "もっと鮮明で明るい、建物全体が写った写真だと助かります。",
        "ko": "건물 전체가 보이는 더 선명하고 밝은 사진이면 도움이 됩니다.",
    },
    "photo_hint_no-photos": {
        "en": "This tour has no reference photos yet, so I can't recognise places from photos.",
        "fr": "Cette visite n'a pas encore de photos de référence ; je ne peux donc pas reconnaître les lieux.",
        "de": "Diese Tour hat noch keine Referenzfotos, daher kann ich Orte auf Fotos nicht erkennen.",
        "es": "Este recorrido aún no tiene fotos de referencia, así que no puedo reconocer lugares en fotos.",
        "it": "Questo tour non ha ancora foto di riferimento, quindi non posso riconoscere i luoghi dalle foto.",
        "pt": "Este passeio ainda não tem fotos de referência, por isso não consigo reconhecer lugares em fotos.",
        "nl": "Deze tour heeft nog geen referentiefoto's, dus ik kan plekken op foto's niet herkennen.",
        "zh": "本次游览还没有参考照片，所以我无法从照片中认出地方。",
        "ja": "このツアーにはまだ参考写真がないため、写真から場所を認識できません。",
        "ko": "이 투어에는 아직 참고 사진이 없어서 사진으로 장소를 알아볼 수 없습니다.",
    },
}


def phrase(key: str, lang: str, **values) -> str:
    """A fixed phrase of the guide in `lang` (English where the language has none), filled with values."""
    table = _PHRASES[key]
    text = table.get(lang)
    if text is None:
        text = table["en"]
        if key == "system":
            text += f" Always answer in {language_name(lang)}."
    return text.format(**values) if values else text


def fold(text: str) -> str:
    """Lowercase, strip Latin accents and punctuation: "Sacré-Cœur" -> "sacre coeur" (kana keep their marks)."""
    text = unicodedata.normalize("NFKD", text.casefold().replace("œ", "oe").replace("æ", "ae"))
    text = unicodedata.normalize("NFC", re.sub(r"[\u0300-\u036f]", "", text))
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")


@functools.lru_cache(maxsize=16)
def _detector(codes: tuple[str, ...]):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    langs = []
    for code in codes:
        try:
            langs.append(Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())))
        except AttributeError:
            continue
    if len(langs) < 2:
        return None
    return LanguageDetectorBuilder.from_languages(*langs).build()


def detect_language(text: str, allowed: list[str] | tuple[str, ...], fallback: str = "en") -> tuple[str, float]:
    """The language of `text` among `allowed` codes, with a confidence in [0, 1].

    Scripts decide first (kana -> ja, hangul -> ko, Han only -> zh), then lingua's statistical models
    restricted to the allowed Latin-script languages. Returns (fallback, 0.0) when nothing can be told.
    """
    allowed = tuple(dict.fromkeys(allowed)) or (fallback,)
    if _KANA.search(text) and "ja" in allowed:
        return "ja", 1.0
    if _HANGUL.search(text) and "ko" in allowed:
        return "ko", 1.0
    letters = [c for c in text if c.isalpha()]
    han = sum(1 for c in letters if _HAN.match(c))
    if letters and han / len(letters) > 0.3:
        for code in ("zh", "ja"):
            if code in allowed:
                return code, 1.0
    latin = tuple(c for c in allowed if c not in ("zh", "ja", "ko"))
    if not latin or not letters:
        return (latin[0] if latin else allowed[0]) if letters else fallback, 0.0
    if len(latin) == 1:
        return latin[0], 1.0
    detector = _detector(latin)
    if detector is None:
        return latin[0], 0.0
    values = detector.compute_language_confidence_values(text)
    if not values:
        return fallback, 0.0
    best = values[0]
    return best.language.iso_code_639_1.name.lower(), float(best.value)
