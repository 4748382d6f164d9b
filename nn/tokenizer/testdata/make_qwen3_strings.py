# Writes strings.json: seeded random test strings for make_qwen3_golden.js.
import json, random
r = random.Random(20240607)
words = ["hello","world","the","The","a","cat","DOG","token","izer","Qwen","GPT","model","run","running","don","isn","you","I","we","they","it","x","data","JSON","http","www","com"]
contr = ["'s","'t","'re","'ve","'m","'ll","'d","'S","'T","'RE","'Ve","'LL","'D","'x","'"]
punct = list(".,;:!?-_()[]{}<>\"'`~@#$%^&*+=/\\|") + ["...","--","!!","?!","->","=>","://","##"]
digits = ["0","1","42","123","2024","3.14","1,000","007","99999","１２３","٣","½","²"]
spaces = [" ","  ","   ","\t","\n","\n\n","\r\n"," \n","\n ","  \n  ","\u00a0","\u3000","\u2003"," \t "]
uni = ["café","naïve","Straße","Ελληνικά","русский","日本語","中文字符","한국어","العربية","עברית","हिन्दी","ภาษาไทย","Ωmega","ŁÓDŹ","Ça","ñandú","İstanbul","ǅ","ﬁ","Ⅻ","e\u0301","a\u0308","o\u0302\u0323","\u1100\u1161\u11a8","n\u0303o","A\u030a","\u0915\u093c","Å"]
emoji = ["😀","👍🏽","👨‍👩‍👧","🇺🇸","❤️","🙂🙃","✨","🤖","☃"]
special = ["<|im_start|>","<|im_end|>","<|endoftext|>","<think>","</think>","<tool_call>","<|im_start|>user\n","<|im_start|>assistant\n"]
def piece():
    k = r.random()
    if k < 0.30: return r.choice(words)
    if k < 0.38: return r.choice(contr)
    if k < 0.52: return r.choice(punct)
    if k < 0.60: return r.choice(digits)
    if k < 0.75: return r.choice(spaces)
    if k < 0.87: return r.choice(uni)
    if k < 0.94: return r.choice(emoji)
    if k < 0.97: return r.choice(special)
    return chr(r.choice([r.randint(0x20,0x7e), r.randint(0xa1,0x24f), r.randint(0x370,0x3ff), r.randint(0x400,0x4ff), r.randint(0x4e00,0x9fff), r.randint(0x1f300,0x1f5ff), r.randint(0x300,0x36f)]))
out = ["Hello world", "Hello, world!", "I'm here", "  leading", "trailing   ", "a\n\n\nb", "x \n y", "123456789", "", " ", "\n", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"]
for n in range(420):
    s = "".join(piece() for _ in range(r.randint(1, 24)))
    if r.random() < 0.2: s = " " + s
    if r.random() < 0.2: s += r.choice(spaces)
    out.append(s)
json.dump(out, open("strings.json","w"), ensure_ascii=False)
print(len(out))
