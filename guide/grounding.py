"""Is the visitor asking for something the sources cannot say? Checked before the LLM is asked.

Small models answer almost anything: asked for the Wi-Fi password of a cathedral, they make one
up. A tourist's unanswerable questions are mostly requests for a kind of information that a
tour text simply does not hold (a password, a phone number, a person's name in an office, a
parking price). Each such kind is a concept with its words in the tour's languages; when the
question names a concept and none of the attraction's texts shows it, the guide declines without
asking the model. Prices need evidence of an amount of money, phone numbers of a phone number,
and a person in office is asked for only in the present ("who is the director", not "who was
president when it opened").

Those concepts are a word list: a question of a kind no concept names (tomorrow's weather, the
number of cleaners, the colour of a door) passes them. `missing_content` is the general check: the
question's content words (what is left once function words, question words and names are taken out)
must each appear in at least one text the guide holds on the subject; a word that appears in none
is something the texts do not talk about. It runs only for Latin-script questions, and only when the
tour has texts in the question's language (an English-only tour is answered across languages, and
a French word is then absent from every English text).

Then the checks on what the model wrote: `is_refusal` (is it declining?), `unsupported_claims`
(numbers no source gave), `is_dump` (the sources pasted back), `is_bare`, `is_echo`. docs/GROUNDING.md
says what each costs and gains, measured.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from .lang import fold
from .retrieval import tokenize

__all__ = ["Concept", "CONCEPTS", "GUARDS", "asked_concepts", "missing_concepts", "missing_content", "guard_set",
           "is_refusal", "refusal_decided", "unsupported_claims", "is_dump", "is_bare", "is_echo"]


@dataclass(frozen=True)
class Concept:
    name: str
    asked: re.Pattern  # the question asks for it (matched on accent-folded lowercase text)
    evidence: re.Pattern  # the sources hold it
    words: bool = True  # evidence is words (matched on folded text too), not a pattern like a phone number
    when: re.Pattern | None = None  # asked only if the question also matches this (on folded text)


def _words(*words: str) -> re.Pattern:
    latin = [fold(w) for w in words if w.isascii() or not re.search(r"[\u3040-\u9fff\uac00-\ud7af]", w)]
    cjk = [w for w in words if w not in latin and re.search(r"[\u3040-\u9fff\uac00-\ud7af]", w)]
    parts = [r"\b" + re.escape(w) + r"\w{0,3}\b" for w in latin] + [re.escape(w) for w in cjk]
    return re.compile("|".join(parts))


_WIFI = ("wifi", "wi fi", "wlan", "internet", "password", "mot de passe", "passwort", "kennwort",
         "contrasena", "clave wifi", "senha", "无线网", "无线", "密码", "ワイファイ", "パスワード", "無線", "와이파이", "비밀번호")
_PHONE = ("phone", "telephone", "telefon", "telefono", "telefonnummer", "numero de telephone", "hotline",
          "电话", "電話", "전화")
_EMAIL = ("email", "e mail", "courriel", "邮箱", "電子メール", "メールアドレス", "이메일")
_ROLE = ("director", "directors", "directeur", "directrice", "direktor", "direktorin", "directora", "direttore",
         "direttrice", "diretor", "diretora", "curator", "conservateur", "kurator", "manager", "managerin",
         "gerente", "rector", "rektor", "recteur", "rettore", "reitor", "pfarrer", "priest", "pretre", "owner", "proprietaire", "besitzer", "dueno", "ceo", "president", "prasident", "presidente",
         "馆长", "主任", "负责人", "院长", "館長", "園長", "責任者", "관장")
_PARKING = ("parking", "car park", "parkplatz", "parkhaus", "parken", "aparcamiento", "aparcar", "estacionamiento",
            "parcheggio", "estacionamento", "停车", "駐車", "주차")
_STAFF = ("employees", "staff", "employes", "personnel", "mitarbeiter", "angestellte", "beschaftigte",
          "empleados", "trabajadores", "dipendenti", "funcionarios", "员工", "工作人员", "職員", "従業員", "スタッフ", "직원")
_CLOAK = ("cloakroom", "locker", "lockers", "vestiaire", "consigne", "garderobe", "schliessfach", "consigna",
          "guardaroba", "寄存", "ロッカー", "クローク", "보관함")
_TOILET = ("toilet", "toilets", "restroom", "bathroom", "toilettes", "wc", "toilette", "aseo", "aseos", "banos",
           "bagno", "bagni", "banheiro", "厕所", "洗手间", "卫生间", "トイレ", "화장실")
_MENU = ("menu", "speisekarte", "carta del restaurante", "菜单", "メニュー", "메뉴")
_PRICE_Q = ("how much", "cost", "costs", "price", "prices", "fee", "combien", "coute", "prix", "tarif", "kostet",
            "kosten", "preis", "eintritt", "cuanto cuesta", "cuesta", "precio", "quanto costa", "costa", "prezzo",
            "quanto custa", "custa", "preco", "多少钱", "价格", "票价", "费用", "いくら", "料金", "値段", "얼마")
# a price is answered by an amount of money ("about €14", "7.8 million francs", "1万円") or by "free";
# the word "price" alone says nothing about one
_MONEY = (r"€|\$|£|¥|₣|\beur\b|\beuros?\b|\bfrancs?\b|\bdollars?\b|\bpounds?\b|\blivres?\b|\bfr\.|"
          r"\bpesetas?\b|\blire\b|\byen\b|法郎|欧元|美元|日元|フラン|ユーロ|ドル|円|元")
_SCALE = r"(?:millions?|billions?|milliards?|thousand|mille|millionen|milliarden|tausend|millones|mil|miles|milioni|mio\.?|bn|k)"
_PRICE_EVIDENCE = re.compile(rf"\d[\d.,\u202f\u00a0 ]*\s*(?:{_SCALE}\s*(?:de\s*|of\s*)?)?(?:{_MONEY})|(?:{_MONEY})\s*\d|\bfree\b|\bgratuit|"
                             r"\bkostenlos|\bgratis\b|\bfrei\b|\bgratuito|\bgratuita|免费|無料|무료", re.IGNORECASE)
# a person in office is the one holding it now ("the current director", "who runs it today"); "who was
# president when it opened?" asks for a historical fact, which the texts may well hold
_NOW = re.compile(r"\b(?:current|currently|now|today|at present|these days|present|actuel|actuelle|actuellement|"
                  r"aujourd hui|en ce moment|aktuell|aktuelle|aktuellen|aktueller|derzeit|derzeitige|heute|jetzt|"
                  r"momentan|gegenwartig|amtierende|actual|actualmente|hoy|ahora|attuale|attualmente|oggi|atual|"
                  r"atualmente|hoje|huidige|nu|who runs|who manages|who is in charge|qui dirige|wer leitet|"
                  r"quien dirige)\b|现任|目前|现在|如今|当前|現在|今の|現職|現任|いまの|현재")
_PHONE_EVIDENCE = re.compile(r"(?:\+\d{1,3}[ .-]?)?(?:\(?\d{1,4}\)?[ .-]){3,}\d{2,4}")  # +33 1 44 11 23 23

CONCEPTS: tuple[Concept, ...] = (
    Concept("wifi", _words(*_WIFI), _words(*_WIFI)),
    Concept("phone", _words(*_PHONE), _PHONE_EVIDENCE, words=False),
    Concept("email", _words(*_EMAIL), re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"), words=False),
    Concept("person in office", _words(*_ROLE), _words(*_ROLE), when=_NOW),
    Concept("parking", _words(*_PARKING), _words(*_PARKING)),
    Concept("staff", _words(*_STAFF), _words(*_STAFF)),
    Concept("cloakroom", _words(*_CLOAK), _words(*_CLOAK)),
    Concept("toilets", _words(*_TOILET), _words(*_TOILET)),
    Concept("menu", _words(*_MENU), _words(*_MENU)),
    Concept("price", _words(*_PRICE_Q), _PRICE_EVIDENCE, words=False),
)


def asked_concepts(question: str) -> list[Concept]:
    """The kinds of information the question asks for (among CONCEPTS)."""
    folded = fold(question)
    raw = question.casefold()
    return [c for c in CONCEPTS if (c.asked.search(folded) or c.asked.search(raw))
            and (c.when is None or c.when.search(folded) or c.when.search(raw))]


def missing_concepts(question: str, texts: list[str]) -> list[str]:
    """Names of the concepts the question asks for that none of `texts` shows."""
    asked = asked_concepts(question)
    if not asked:
        return []
    joined = "\n".join(texts)
    folded = fold(joined)
    missing = []
    for c in asked:
        if not (c.evidence.search(joined) or (c.words and c.evidence.search(folded))):
            missing.append(c.name)
    return missing


# --- the question's content words -------------------------------------------------------------------

# Function words and the words questions are made of, per language (accent-folded). Whatever else a
# question holds is what it is about; a content word found in no text means the texts do not say.
_STOP = set("""
a an the of in on at to for from by with about into onto over under beneath below above near nearby inside
after before since until during while
outside there here this that these those it its it's is are was were be been being am do does did done
have has had can could will would shall should may might must i you he she we they me my your our their
him her them us what which who whom whose when where why how much many long far tall high big old large
wide deep heavy often any some all each every other another one two first last most more than then also
and or but not no yes if so as up out just still ever really please tell know like look see seen visit
visitor visitors go get going got make made built build building designed design created opened open
there's what's who's let's name named called call thing things kind type lot lots way people person day
days year years time times today now currently current exactly roughly about approximately whole part
inside really place places famous there world
le la les l un une des du de d au aux et ou en dans sur sous avec pour par ce cet cette ces qui que qu
quoi quel quelle quels quelles quand ou comment combien pourquoi est sont etait etaient fut a ont avait
il elle ils elles on je tu nous vous y ne pas plus peut peuvent puis faut fait faire voir visiter s se sa
son ses leur leurs mon ma mes ton votre vos notre nos c ca cela celui celle me te moi toi lui t il-y
ete etre avoir aussi tres bien tout tous toute toutes encore deja aujourd hui actuellement nom appelle
appelait appelee construit construite concu concue ouvert ouverte lieu chose
der die das den dem des ein eine einer eines einem einen und oder aber nicht kein keine ist sind war
waren wurde wurden wird werden hat haben hatte es er sie wir ihr ich du man sich in im am an auf aus bei
mit nach von vor zu zum zur uber unter neben fur durch gegen um wie was wer wen wem wessen wo wann warum
welche welcher welches welchen wieviel viele viel hoch lang alt gross kann konnen darf durfen muss mussen
soll sollte gibt es heute jetzt aktuell noch schon auch sehr ganz dort hier dies diese dieser dieses
heisst heissen lautet name genannt gebaut erbaut entworfen geoffnet besuchen sehen ort
el la los las lo un una unos unas y o u pero no ni es son era eran fue fueron esta estan estaba ser
estar hay habia ha han de del al en con por para sin sobre bajo entre desde hasta que quien quienes
cual cuales cuando donde como cuanto cuanta cuantos cuantas por que se le les su sus mi mis tu tus nuestro
puede pueden puedo se hoy ahora actual actualmente todavia tambien muy mas nombre llama llaman construyo
construido construida diseno disenado disenada abrio abierto visitar ver lugar cosa
il lo gli i una uno di da dei delle della del che chi come dove quanto quanti quale sono era furono e
o de do da dos das um uma quem qual quais quanto quantos onde foi sao
describe explain something anything interesting special information info facts fact history story
raconte racontez raconter parle parlez decris decrivez explique expliquez quelque chose interessant histoire
erzahl erzahle erzahlen erzahlt beschreib beschreibe beschreiben erklar erklare erklaren etwas etwa
interessant interessantes besonderes geschichte bitte mehr uber
cuentame cuenta cuentenos hablame habla describe describeme explica explicame algo interesante historia
dimmi parlami raccontami conte fale diga explique algo interessante
annee annees ano anos jahr jahre jahren moment personajes personnes personas persons personen leute gente
someone anyone somebody quelqu jemand alguien alguno qualcuno
sorry excuse hello thanks thank unfortunately sadly forgot forgotten remember desole excusez bonjour merci
malheureusement oublie leider entschuldigung hallo danke vergessen habe weiss siento perdon hola gracias
lamentablemente olvidado scusi grazie purtroppo desculpe obrigado
""".split())


# a concept's own words ("cost", "director") are judged by its evidence, not by their presence
_CONCEPT_WORD = re.compile("|".join(f"(?:{c.asked.pattern})" for c in CONCEPTS))


# the words that come before a noun ("the door", "la porte", "el guía", "how many cleaners"): a content word
# is a noun, so the verbs of a question ("tiene", "angelegt", "became") are not taken for what it asks about
_BEFORE_NOUN = set("""
the a an this that these those its their his her my your our which what whose many much any some no of for
on at in with about from by to
le la les l un une des du de d au aux ce cet cette ces quel quelle quels quelles son sa ses leur leurs mon ma
mes votre vos notre nos en dans sur pour par avec
el los las lo una unos unas del al que cual cuales cuantos cuantas cuanto cuanta su sus mi mis con por para
sobre
il gli i della dei delle dello o os as um uma do da dos das no na nos nas
""".split())


def _content_words(question: str, names: Iterable[str], lang: str = "") -> list[str]:
    """The nouns of the question that are not names, function words or a concept's words: in German the
    capitalised words inside the sentence, elsewhere the words after an article, a determiner or a
    preposition."""
    name_words = {w for n in names for w in fold(n).split()}
    raw = [t for t in re.split(r"[^\w]+", question) if t]
    words, prev = [], ["", ""]
    for i, token in enumerate(raw):
        w = fold(token)
        if lang == "de":
            noun = i > 0 and token[:1].isupper()
        else:
            # and in English the word after that ("the main door"); in French or Spanish it is often a verb
            noun = prev[0] in _BEFORE_NOUN or (lang == "en" and prev[1] in _BEFORE_NOUN
                                                and prev[0] not in _BEFORE_NOUN and prev[0] not in _STOP)
            if i > 0 and token[:1].isupper():  # a capitalised word inside the sentence is a name
                name_words.add(w)
        prev = [w, prev[0]]
        if (noun and len(w) >= 4 and w.isalpha() and w.isascii() and w not in _STOP and w not in name_words
                and not (w.endswith("s") and w[:-1] in _STOP) and not _CONCEPT_WORD.fullmatch(w)):
            words.append(w)
    return words


# Chinese and Japanese function words and question words: what is left between them (and names) is
# what the question is about ("明天埃菲尔铁塔的天气怎么样？" -> 明天, 天气)
_CJK_FUNCTION = re.compile(
    r"[\u3040-\u309f]+|什么|多少|怎么样|怎么|为什么|哪里|哪个|哪一年|哪位|哪座|哪些|可以|能否|是否|请问|现在|目前|"
    r"不好意思|对不起|谢谢|我不知道|知道|一下|问题|問題|質問|著名|有名|何年|何人|何段|何階|何時|何|誰|[的是有吗呢了在和与及或里中内哪谁几么吧啊呀个位座年"
    r"我你他她它们这那就都也很最更还又被把给对从到向为以于并且而及其之所者时会要想去来看说做多高大小长久？！。，、：；（）「」『』・\s\d]")


def _cjk_words(question: str, names: Iterable[str]) -> list[str]:
    text = _asked_sentence(question)
    for name in sorted((n for n in names if n), key=len, reverse=True):
        text = text.replace(name, " ")
    return [w for w in _CJK_FUNCTION.split(text) if len(w) >= 2 and re.fullmatch(r"[\u30a0-\u30ff\u4e00-\u9fff]+", w)]


def _asked_sentence(question: str) -> str:
    """The question itself: markup dropped, and of several sentences the last one asking ("Hello! I'm
    from Lyon. How tall is it?" -> "How tall is it?")."""
    text = re.sub(r"<[^>]*>", " ", question)
    sentences = [t for t in re.split(r"(?<=[.!?:;])\s*", text.strip()) if t.strip()]
    asking = [t for t in sentences if t.rstrip().endswith("?")] or sentences
    return asking[-1] if asking else text


def _stem(word: str) -> str:
    """A prefix that inflected forms share: 'cleaners' -> 'cleane', 'weather' -> 'weath', 'door' -> 'door'."""
    return word[: max(4, min(len(word) - 2, 7))]


def missing_content(question: str, texts: list[str], *, names: Iterable[str] = (), lang: str = "",
                    at_least: int = 1) -> list[str]:
    """The nouns of the question that none of `texts` holds (an inflected form counts), when they are at
    least half of its nouns and at least `at_least` of them; else []. For Latin-script questions only;
    `names` (the attractions', the tour's) are not content."""
    if re.search(r"[\u3040-\u9fff]", question):
        words = _cjk_words(question, names)
        joined = "\n".join(texts)
        # no word boundaries: a word is there when any two characters of it are
        missing = [w for w in words if not any(w[i:i + 2] in joined for i in range(len(w) - 1))]
        return missing if len(missing) >= at_least and 2 * len(missing) >= len(words) else []
    if re.search(r"[\uac00-\ud7af]", question):
        return []
    words = _content_words(_asked_sentence(question), names, lang)
    if not words:
        return []
    vocab = {t for text in texts for t in fold(text).split()}
    stems = {t[:k] for t in vocab for k in range(4, 8) if len(t) >= k}
    missing = [w for w in words if _stem(w) not in stems and w not in vocab]
    return missing if len(missing) >= at_least and 2 * len(missing) >= len(words) else []


# --- is the model declining? ------------------------------------------------------------------------

# A polite opening that may lead to an answer or to a refusal: judged by what follows it.
_SOFT = re.compile(r"^(?:unfortunately|sadly|sorry|i m sorry(?: to say)?|i am sorry(?: to say)?|i regret to say|"
                   r"alas|well|malheureusement|desole|desolee|je suis desole|helas|leider|es tut mir leid|"
                   r"tut mir leid|das tut mir leid|bedauerlicherweise|lamentablemente|desafortunadamente|"
                   r"lo siento|por desgracia|purtroppo|mi dispiace|infelizmente|desculpe|helaas|sorry|"
                   r"很抱歉|抱歉|不好意思|遗憾的是|可惜|残念ながら|申し訳ありませんが|申し訳ございませんが|すみませんが|"
                   r"죄송합니다|아쉽게도)(?:\s+(?:but|mais|aber|pero|ma|mas|maar))?\s*")
# Saying that it does not know, or that the sources do not say (on folded text).
_DECLINE = re.compile(
    r"\b(?:i|we) (?:really )?(?:don t|do not|didn t|cannot|can t|am not able to|m not able to|m unable to|am unable to)"
    r" (?:know|say|tell|answer|find|provide|help|give|confirm|determine)|\bi (?:m|am) not sure|\bno idea\b|"
    r"\b(?:i|we) (?:have|ve got|ve) no (?:information|idea|data|details)|\bi don t have (?:any |that |this )?"
    r"(?:information|details|data)|\bno (?:information|data|details|mention)\b|\bnot (?:mentioned|provided|"
    r"specified|stated|said|described)\b|\b(?:source|sources|text|texts|context|"
    r"passage|passages|information) (?:provided |given |above )?(?:do not|don t|does not|doesn t|did not|cannot|"
    r"can t|say nothing|contain no|mention no|make no|has no|have no)\b|\bmy sources\b.{0,60}\b(?:don t|do not)\b|"
    r"\bje ne (?:sais|peux|connais)\b|\bje n ai (?:pas|aucune)\b|\baucune information\b|\bpas (?:d information|"
    r"mentionne|precise|indique)|\bsources?\b.{0,60}\bne (?:le |l |les |en |me |)(?:disent|dit|mentionnent|"
    r"mentionne|precisent|precise|indiquent|indique|donnent|contiennent|permettent)\b|"
    r"\bweiss (?:ich )?(?:es |das )?(?:leider )?nicht\b|\bkeine (?:informationen|angaben|ahnung)\b|"
    r"\bnicht (?:erwahnt|angegeben|genannt|beschrieben)\b|\b(?:quellen|texte)\b.{0,60}\b(?:sagen|enthalten|nennen|"
    r"erwahnen|geben)\b.{0,20}\b(?:nichts|keine|nicht)\b|\bkann ich (?:nicht|leider nicht) (?:sagen|beantworten)|"
    r"\bno lo se\b|^no (?:lo )?se$|\bno (?:tengo|dispongo de|hay) (?:informacion|datos)|\bno (?:se )?(?:menciona|"
    r"especifica|indica)\b|\b(?:fuentes|textos)\b.{0,60}\bno (?:lo |la |)(?:dicen|dice|mencionan|indican|"
    r"especifican|contienen)\b|\bno puedo (?:responder|decir|saber)\b|"
    r"\bnon lo so\b|\bnao sei\b|\bdat weet ik niet\b|\bfonti\b.{0,60}\bnon (?:lo )?(?:dicono|dice|menzionano)\b|"
    r"\bfontes\b.{0,60}\bnao (?:o )?(?:dizem|diz|mencionam)\b|\bbronnen\b.{0,60}\bniets\b|"
    r"我不知道|不知道|没有提到|没有提及|未提及|没有相关|没有关于|没有说明|无法回答|无法确定|不清楚|资料中没有|资料里没有|"
    r"わかりません|分かりません|記載されていません|記載がありません|書かれていません|情報はありません|情報がありません|"
    r"情報がない|情報はない|お答えできません|不明です|모르겠습니다|알 수 없습니다|내용이 없")
_SENTENCE_END = re.compile(r"[.!?。！？\n]")


def _first_claim(text: str) -> tuple[str, bool, bool]:
    """The first sentence that says something, past a polite opening ("Unfortunately, ..."), folded;
    whether that sentence is finished; whether a polite opening came before it."""
    text = _CITATION.sub(" ", text)
    opened = False
    while True:
        stripped = text.lstrip(" \t\n.,;:!?-–—。，、！？")
        m = _SENTENCE_END.search(stripped)
        sentence = stripped[: m.start()] if m else stripped
        folded = fold(sentence)
        opener = _SOFT.match(folded)
        opened = opened or bool(opener and opener.end())
        rest = folded[opener.end():] if opener else folded
        if m and not rest and opener:  # "I'm sorry." / "Leider." alone: judge the next sentence
            text = stripped[m.end():]
            continue
        return rest, m is not None, opened


def is_refusal(text: str) -> bool:
    """Whether an answer declines: its first sentence that says something (after a polite opening such as
    "Unfortunately," or "Leider") says it does not know or that the sources do not say. An apology that
    leads to a fact ("I'm sorry to say it was demolished in 1871") is an answer; nothing at all is a refusal."""
    claim, _, _ = _first_claim(text)
    return not claim or bool(_DECLINE.search(claim))


def refusal_decided(text: str) -> bool:
    """Whether the refusal check can be made on a text still being written: it does not open politely,
    or the sentence after its polite opening is finished, or already says it does not know."""
    claim, finished, opened = _first_claim(text)
    return not opened or finished or bool(claim and _DECLINE.search(claim))


# --- what the model wrote ---------------------------------------------------------------------------

# a number, with thousands groups ("1,113", "1 665"); single digits are ignored ("3 levels" = "three levels")
_NUMBER = re.compile(r"\d{1,3}(?:[,.\u202f\u00a0 ]\d{3})+(?!\d)|\d+")
_CITATION = re.compile(r"\[(\d+)\]")


def _numbers(text: str) -> set[str]:
    found = {re.sub(r"\D", "", m.group()) for m in _NUMBER.finditer(unicodedata.normalize("NFKC", text))}
    return {n.lstrip("0") or "0" for n in found if len(n) > 1}


def unsupported_claims(answer: str, hits, question: str) -> list[str]:
    """Numbers in the answer that appear in neither the sources nor the question (invented facts)."""
    known = _numbers(question)
    for h in hits:
        known |= _numbers(h.passage.text if hasattr(h, "passage") else h)
    cleaned = _CITATION.sub(" ", answer)
    return sorted(n for n in _numbers(cleaned) if n not in known)


def is_dump(answer: str) -> bool:
    """Whether the model pasted the numbered sources back ("[1] Eiffel Tower: ... [2] ...")."""
    return bool(re.match(r"\s*\[\d+\]\s*\S", answer)) and len(_CITATION.findall(answer)) >= 2


# A reply that is only "yes" or "no" in some language: "Can I go inside?" -> "是" / "はい[1]。".
_BARE = {fold(w) for w in (
    "yes", "no", "yes, you can", "oui", "non", "ja", "nein", "si", "sí", "sì", "sim", "não", "nee",
    "是", "是的", "对", "可以", "不", "不是", "不可以", "不能", "能", "はい", "いいえ", "ええ", "예", "네", "아니요",
)}


def is_bare(answer: str) -> bool:
    """Whether the answer is a bare yes or no, with nothing the visitor could use."""
    text = fold(_CITATION.sub(" ", answer))
    return re.sub(r"[\s.!?,;:。！？、，]+", " ", text).strip() in _BARE


def is_echo(answer: str, question: str) -> bool:
    """Whether the answer only repeats (part of) the question: nothing in it that the question lacks
    (a bare yes or no counts: it tells the visitor nothing new).

    A number the question does not hold is an answer however much of the question is restated around
    it ("How tall is the Eiffel Tower?" -> "The Eiffel Tower is 330 m tall"): counted as an echo, such
    answers were asked again and often lost (measured on the held-out written questions). A new *name*
    is not (tried: it kept "Charles Garnier a peint le plafond" and "Charles de Gaulle is buried beneath
    the Arc de Triomphe", two wrong Paris answers, to keep one right one of the grounding set).
    """
    words = [t for t in tokenize(_CITATION.sub(" ", answer)) if len(t) > 1 or not t.isascii()]
    if not words or is_bare(answer):
        return True
    asked = set(tokenize(question))
    if any(ch.isdigit() for t in words if t not in asked for ch in t):
        return False
    return sum(t in asked for t in words) / len(words) >= 0.8


# --- which guards are on ----------------------------------------------------------------------------

GUARDS = {
    "concepts": "decline, before the model is asked, a question for a listed kind of information (Wi-Fi, "
                "phone, a person in office, parking, a price...) that no text shows",
    "content": "decline, before the model is asked, a question whose content word no text holds",
    "echo": "ask again when the answer only repeats the question (then quote the best source sentence)",
    "dump": "quote the best source sentence when the model pastes the numbered sources back",
    "numbers": "withdraw an answer with a number that neither the sources nor the question hold",
}


def guard_set(guards) -> frozenset[str]:
    """The guards that are on: True (all), False or None (none), or names ("concepts,numbers" or a set)."""
    if guards is True:
        return frozenset(GUARDS)
    if not guards:
        return frozenset()
    names = {g.strip() for g in (guards.split(",") if isinstance(guards, str) else guards) if g.strip()}
    unknown = names - set(GUARDS)
    if unknown:
        raise ValueError(f"unknown answer guard(s) {', '.join(sorted(unknown))}; choose from {', '.join(GUARDS)}")
    return frozenset(names)
