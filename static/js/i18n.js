// Interface strings in English and Simplified Chinese. The language follows the
// browser's until the user picks one in Settings (kept in localStorage).

const en = {
  app: "Parley",
  tagline: "Messages that arrive — for everyone you talk to.",
  signIn: "Sign in", signUp: "Create account", signOut: "Sign out",
  login: "Username, email or phone", password: "Password",
  displayName: "Name", emailOrPhone: "Email or phone (+86…)", usernameOpt: "Username (optional)",
  codeSignIn: "Sign in with a code", passwordSignIn: "Sign in with a password",
  sendCode: "Send code", code: "6-digit code", codeSent: "Code sent. Check your inbox or phone.",
  noAccount: "New to Parley?", haveAccount: "Already have an account?",
  chats: "Chats", contacts: "Contacts", settings: "Settings", me: "Me",
  search: "Search", noChats: "No chats yet. Add a contact to start talking.",
  selectChat: "Select a chat to start messaging",
  typeMessage: "Type a message", send: "Send",
  typing: "{name} is typing…", recording: "{name} is recording voice…",
  online: "Online", offline: "Offline", lastSeen: "Last seen {time}",
  read: "Read", sent: "Sent", sending: "Sending…", failed: "Not sent", retry: "Retry",
  today: "Today", yesterday: "Yesterday",
  recalledMine: "You recalled a message", recalledTheirs: "{name} recalled a message",
  recalledPreview: "[Recalled]", photo: "[Photo]", voice: "[Voice]", video: "[Video]", file: "[File]",
  atMe: "[@me]", draft: "[Draft]",
  copy: "Copy", reply: "Reply", recall: "Recall", deleteForMe: "Delete for me",
  replyingTo: "Replying to {name}", cancel: "Cancel",
  loadingOlder: "Loading earlier messages…", beginning: "This is the beginning of the chat",
  offlineBanner: "You are offline. Messages will be sent when the connection is back.",
  reconnecting: "Connecting…",
  newFriends: "New friends", addContact: "Add contact",
  addHint: "Find people by their exact username, email or phone number.",
  searchPeople: "Username, email or phone", find: "Search", noMatch: "Nobody found with exactly that.",
  greeting: "Greeting", greetingDefault: "Hi, I'm {name}", sendRequest: "Send request",
  requestSent: "Request sent", requests: "Requests", incoming: "Received", outgoing: "Sent",
  accept: "Accept", reject: "Reject", accepted: "Added", waiting: "Waiting",
  noRequests: "No friend requests.", message: "Message",
  remark: "Remark", setRemark: "Set remark", save: "Save", deleteContact: "Delete contact",
  block: "Block", unblock: "Unblock", blocked: "Blocked",
  confirmDelete: "Delete {name} from your contacts?", confirmBlock: "Block {name}? They will not be able to message you.",
  noContacts: "No contacts yet.",
  profile: "Profile", privacy: "Privacy", language: "Language", devices: "Devices",
  notifications: "Notifications", enableNotifications: "Enable notifications",
  notificationsOn: "Notifications are on for new messages while Parley is in the background.",
  notificationsBlocked: "Notifications are blocked in this browser.",
  bio: "What's up", username: "Username", saved: "Saved",
  allowStrangers: "Let people who are not my contacts message me",
  sendReadReceipts: "Send read receipts",
  lastSeenVisibility: "Who sees when I'm online",
  everyone: "Everyone", myContacts: "My contacts", nobody: "Nobody",
  discoverableByEmail: "People can find me by email",
  discoverableByPhone: "People can find me by phone",
  thisDevice: "This device", endSession: "Sign out", lastActive: "Last active {time}",
  system: "System", unknownUser: "Someone", you: "You",
  errorGeneric: "Something went wrong. Try again.",
  notContact: "You are not in their contacts any more. Send a friend request first.",
  recallExpired: "Too late to recall this message.",
  copied: "Copied",
  back: "Back",
  muted: "Muted", muteChat: "Mute notifications", unmuteChat: "Unmute notifications",
  newMessage: "New message",
  group: "Group",
  members: "{n} members",
  listSep: ", ",
  sys_created: "{actor} created the group and invited {targets}",
  sys_renamed: "{actor} renamed the group to \u201c{name}\u201d",
  sys_announcement: "{actor} posted an announcement: {text}",
  sys_settings_changed: "{actor} changed the group settings",
  sys_member_added: "{actor} invited {targets} to the group",
  sys_member_removed: "{actor} removed {targets} from the group",
  sys_member_left: "{targets} left the group",
  sys_member_joined: "{targets} joined the group via an invite link",
  sys_owner_changed: "{targets} is now the group owner",
  sys_role_changed: "{actor} changed the role of {targets}",
  sys_member_muted: "{actor} muted {targets}",
  sys_member_unmuted: "{actor} unmuted {targets}",
  sys_dissolved: "{actor} dissolved the group",
  sys_generic: "{actor} updated the group",
  newGroup: "New group", groupInfo: "Group info", groupName: "Group name",
  chooseMembers: "Choose members from your contacts", createGroup: "Create group",
  role_owner: "Owner", role_admin: "Admin", role_member: "Member",
  makeAdmin: "Make admin", removeAdmin: "Remove admin", remove: "Remove",
  addMembers: "Add members", announcement: "Announcement", inviteLink: "Invite link",
  createInvite: "Create invite link", inviteQr: "Invite QR code",
  confirmDissolve: "Dissolve this group for everyone?", confirmLeave: "Leave this group?",
  dissolveGroup: "Dissolve group", leaveGroup: "Leave group", confirmJoin: "Join the group \u201c{name}\u201d?",
  holdToTalk: "Hold to talk", releaseToSend: "Release to send", micBlocked: "Microphone not available.",
  tooShort: "Too short to send.", sendPhoto: "Send a photo", sendVideo: "Send a video", sendFile: "Send a file",
  photoShort: "Photo", videoShort: "Video", fileShort: "File",
};

const zh = {
  app: "Parley",
  tagline: "消息必达，与你想聊的每个人。",
  signIn: "登录", signUp: "注册", signOut: "退出登录",
  login: "用户名、邮箱或手机号", password: "密码",
  displayName: "昵称", emailOrPhone: "邮箱或手机号（+86…）", usernameOpt: "用户名（可选）",
  codeSignIn: "验证码登录", passwordSignIn: "密码登录",
  sendCode: "发送验证码", code: "6 位验证码", codeSent: "验证码已发送，请查收。",
  noAccount: "还没有账号？", haveAccount: "已有账号？",
  chats: "微信", contacts: "通讯录", settings: "设置", me: "我",
  search: "搜索", noChats: "暂无聊天。添加联系人开始聊天吧。",
  selectChat: "选择一个聊天开始发消息",
  typeMessage: "输入消息", send: "发送",
  typing: "{name} 正在输入…", recording: "{name} 正在录音…",
  online: "在线", offline: "离线", lastSeen: "最后在线 {time}",
  read: "已读", sent: "已发送", sending: "发送中…", failed: "发送失败", retry: "重发",
  today: "今天", yesterday: "昨天",
  recalledMine: "你撤回了一条消息", recalledTheirs: "“{name}” 撤回了一条消息",
  recalledPreview: "[已撤回]", photo: "[图片]", voice: "[语音]", video: "[视频]", file: "[文件]",
  atMe: "[有人@我]", draft: "[草稿]",
  copy: "复制", reply: "引用", recall: "撤回", deleteForMe: "删除",
  replyingTo: "回复 {name}", cancel: "取消",
  loadingOlder: "正在加载更早的消息…", beginning: "已经到顶了",
  offlineBanner: "网络不可用。连接恢复后消息会自动发送。",
  reconnecting: "连接中…",
  newFriends: "新的朋友", addContact: "添加朋友",
  addHint: "通过完整的用户名、邮箱或手机号查找。",
  searchPeople: "用户名 / 邮箱 / 手机号", find: "搜索", noMatch: "没有找到该用户。",
  greeting: "打招呼", greetingDefault: "我是{name}", sendRequest: "发送申请",
  requestSent: "已发送申请", requests: "好友申请", incoming: "收到的", outgoing: "发出的",
  accept: "接受", reject: "拒绝", accepted: "已添加", waiting: "等待验证",
  noRequests: "暂无好友申请。", message: "发消息",
  remark: "备注", setRemark: "设置备注", save: "保存", deleteContact: "删除联系人",
  block: "加入黑名单", unblock: "移出黑名单", blocked: "已拉黑",
  confirmDelete: "将 {name} 从通讯录删除？", confirmBlock: "将 {name} 加入黑名单？对方将无法给你发消息。",
  noContacts: "暂无联系人。",
  profile: "个人资料", privacy: "隐私", language: "语言", devices: "登录设备",
  notifications: "通知", enableNotifications: "开启通知",
  notificationsOn: "Parley 在后台时，新消息会弹出通知。",
  notificationsBlocked: "浏览器已禁止通知。",
  bio: "个性签名", username: "用户名", saved: "已保存",
  allowStrangers: "允许非联系人给我发消息",
  sendReadReceipts: "发送已读回执",
  lastSeenVisibility: "谁可以看到我的在线状态",
  everyone: "所有人", myContacts: "我的联系人", nobody: "不允许任何人",
  discoverableByEmail: "允许通过邮箱找到我",
  discoverableByPhone: "允许通过手机号找到我",
  thisDevice: "本设备", endSession: "下线", lastActive: "最近活动 {time}",
  system: "系统", unknownUser: "某人", you: "你",
  errorGeneric: "出错了，请重试。",
  notContact: "你已不是对方的联系人，请先发送好友申请。",
  recallExpired: "超过时间，无法撤回。",
  copied: "已复制",
  back: "返回",
  muted: "免打扰", muteChat: "消息免打扰", unmuteChat: "取消免打扰",
  newMessage: "新消息",
  group: "群聊",
  members: "{n} 名成员",
  listSep: "、",
  sys_created: "{actor}创建了群聊，并邀请{targets}加入",
  sys_renamed: "{actor}修改群名为\u201c{name}\u201d",
  sys_announcement: "{actor}发布了群公告：{text}",
  sys_settings_changed: "{actor}修改了群设置",
  sys_member_added: "{actor}邀请{targets}加入了群聊",
  sys_member_removed: "{actor}将{targets}移出了群聊",
  sys_member_left: "{targets}退出了群聊",
  sys_member_joined: "{targets}通过邀请链接加入了群聊",
  sys_owner_changed: "{targets}已成为新群主",
  sys_role_changed: "{actor}修改了{targets}的身份",
  sys_member_muted: "{actor}将{targets}禁言",
  sys_member_unmuted: "{actor}解除了{targets}的禁言",
  sys_dissolved: "{actor}解散了群聊",
  sys_generic: "{actor}更新了群聊",
  newGroup: "发起群聊", groupInfo: "聊天信息", groupName: "群聊名称",
  chooseMembers: "从通讯录选择成员", createGroup: "创建群聊",
  role_owner: "群主", role_admin: "管理员", role_member: "成员",
  makeAdmin: "设为管理员", removeAdmin: "取消管理员", remove: "移出",
  addMembers: "添加成员", announcement: "群公告", inviteLink: "邀请链接",
  createInvite: "生成邀请链接", inviteQr: "群二维码",
  confirmDissolve: "确定解散该群聊？", confirmLeave: "确定退出该群聊？",
  dissolveGroup: "解散群聊", leaveGroup: "退出群聊", confirmJoin: "加入群聊\u201c{name}\u201d？",
  holdToTalk: "按住 说话", releaseToSend: "松开 发送", micBlocked: "无法使用麦克风。",
  tooShort: "说话时间太短。", sendPhoto: "发送图片", sendVideo: "发送视频", sendFile: "发送文件",
  photoShort: "图片", videoShort: "视频", fileShort: "文件",
};

export const LANGUAGES = { en: "English", "zh-CN": "简体中文" };
const TABLES = { en, "zh-CN": zh };

export function pickLanguage() {
  const saved = localStorage.getItem("parley.lang");
  if (saved && TABLES[saved]) return saved;
  const langs = navigator.languages?.length ? navigator.languages : [navigator.language || "en"];
  for (const l of langs) {
    if (/^zh/i.test(l)) return "zh-CN";
    if (/^en/i.test(l)) return "en";
  }
  return "en";
}

let current = pickLanguage();

export function lang() { return current; }

export function setLanguage(code) {
  if (!TABLES[code]) return;
  current = code;
  localStorage.setItem("parley.lang", code);
  document.documentElement.lang = code;
}

export function t(key, vars) {
  let s = TABLES[current][key] ?? en[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}

document.documentElement.lang = current;
